"""Conversations kept in SQLite (WAL) under the data dir, readable by this user only.

Each message is committed when it completes; a reply is written as it streams
(``update_message`` at most once a second from the app), so a killed app loses at
most the last second of it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgechat.paths import paths
from edgechat.tasks.dbopen import guarded, open_db

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    system TEXT NOT NULL DEFAULT '',
    sampling TEXT NOT NULL DEFAULT '{}',
    model TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    conversation INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    complete INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation, id);
"""


@dataclass
class Message:
    id: int
    role: str
    content: str
    complete: bool = True


@dataclass
class Conversation:
    id: int
    title: str
    system: str = ""
    sampling: dict = field(default_factory=dict)
    model: str = ""
    updated: float = 0.0


class Store:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or paths().data_dir / "conversations.db"
        # Locked, damaged, read-only or in the way: see dbopen. ``notice`` says what was done.
        self.db, self.notice = open_db(self.path, SCHEMA)
        self._add_search_index()

    @guarded
    def close(self) -> None:
        self.db.close()

    @guarded
    def _add_search_index(self) -> None:
        from edgechat.tasks.search import FTS_SCHEMA

        if not self.db.execute("SELECT 1 FROM sqlite_master WHERE name='messages_fts'").fetchone():
            self.db.executescript(FTS_SCHEMA)

    @guarded
    def search(self, text: str, limit: int = 50):
        """Messages across every conversation that hold ``text`` (FTS5), best first."""
        from edgechat.tasks.search import search

        return search(self.db, text, limit)

    # -- conversations --------------------------------------------------------------------

    @guarded
    def create(self, title: str = "New chat", system: str = "", model: str = "") -> Conversation:
        now = time.time()
        cur = self.db.execute(
            "INSERT INTO conversations (title, system, model, created, updated) "
            "VALUES (?, ?, ?, ?, ?)",
            (title, system, model, now, now),
        )
        return Conversation(cur.lastrowid, title, system, {}, model, now)

    @guarded
    def list(self) -> list[Conversation]:
        rows = self.db.execute(
            "SELECT id, title, system, sampling, model, updated FROM conversations "
            "ORDER BY updated DESC, id DESC"
        ).fetchall()
        return [Conversation(r[0], r[1], r[2], json.loads(r[3] or "{}"), r[4], r[5]) for r in rows]

    def has_messages(self) -> bool:
        return self.db.execute("SELECT 1 FROM messages LIMIT 1").fetchone() is not None

    def first_empty(self) -> Conversation | None:
        """The newest conversation with no message yet: a new chat reuses it, so empty
        "New chat" entries do not pile up."""
        row = self.db.execute(
            "SELECT c.id FROM conversations c WHERE NOT EXISTS "
            "(SELECT 1 FROM messages m WHERE m.conversation = c.id) "
            "ORDER BY c.updated DESC, c.id DESC LIMIT 1"
        ).fetchone()
        return self.get(row[0]) if row else None

    def get(self, conversation_id: int) -> Conversation | None:
        return next((c for c in self.list() if c.id == conversation_id), None)

    @guarded
    def rename(self, conversation_id: int, title: str) -> None:
        self.db.execute("UPDATE conversations SET title=? WHERE id=?", (title, conversation_id))

    @guarded
    def configure(self, conversation_id: int, system: str, sampling: dict) -> None:
        self.db.execute(
            "UPDATE conversations SET system=?, sampling=? WHERE id=?",
            (system, json.dumps(sampling), conversation_id),
        )

    @guarded
    def delete(self, conversation_id: int) -> None:
        self.db.execute("DELETE FROM conversations WHERE id=?", (conversation_id,))

    # -- messages -------------------------------------------------------------------------

    @guarded
    def messages(self, conversation_id: int) -> list[Message]:
        rows = self.db.execute(
            "SELECT id, role, content, complete FROM messages WHERE conversation=? ORDER BY id",
            (conversation_id,),
        ).fetchall()
        return [Message(r[0], r[1], r[2], bool(r[3])) for r in rows]

    @guarded
    def add_message(self, conversation_id: int, role: str, content: str, complete=True) -> int:
        now = time.time()
        cur = self.db.execute(
            "INSERT INTO messages (conversation, role, content, complete, created) "
            "VALUES (?, ?, ?, ?, ?)",
            (conversation_id, role, content, int(complete), now),
        )
        self.db.execute("UPDATE conversations SET updated=? WHERE id=?", (now, conversation_id))
        return cur.lastrowid

    @guarded
    def delete_messages_from(self, conversation_id: int, message_id: int) -> None:
        """Forget a message and every later one (regenerate, edit and resend)."""
        self.db.execute(
            "DELETE FROM messages WHERE conversation=? AND id>=?", (conversation_id, message_id)
        )

    @guarded
    def update_message(self, message_id: int, content: str, complete: bool = False) -> None:
        self.db.execute(
            "UPDATE messages SET content=?, complete=? WHERE id=?",
            (content, int(complete), message_id),
        )

    def export_markdown(self, conversation_id: int) -> str:
        conv = self.get(conversation_id)
        if conv is None:
            return ""
        out = [f"# {conv.title}", ""]
        if conv.system:
            out += [f"_System: {conv.system}_", ""]
        for m in self.messages(conversation_id):
            who = {"user": "You", "assistant": "Assistant"}.get(m.role, m.role)
            note = "" if m.complete else " (stopped)"
            out += [f"## {who}{note}", "", m.content.strip(), ""]
        return "\n".join(out)
