"""Conversations kept in SQLite (WAL) under the data dir, readable by this user only.

Every write commits at once (autocommit), so the database holds what the app had at
any moment, even if the process dies with no Python running after (a native fault in
llama.cpp): the user's message is stored before its reply starts, the reply is written
into its own row as it streams (``update_message``, about twice a second from the app)
and stays marked incomplete until it ends, and the unsent draft is kept beside its
conversation (``save_draft``, as it is typed). The schema is versioned (``PRAGMA user_version``) and
brought up to date by numbered upgrades when a database is opened.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from edgechat.errors import ConfigError
from edgechat.paths import paths
from edgechat.tasks.claims import Claims
from edgechat.tasks.dbopen import guarded, open_db
from edgechat.tasks.search import FTS_SCHEMA

# Numbered upgrades: entry N brings a database at user_version N-1 to N. Append only;
# never edit a released one. Databases from before versioning are at 0 and already
# hold version 1's tables, hence IF NOT EXISTS there.
UPGRADES: tuple[str, ...] = (
    # 1: conversations and their messages
    """
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
    """,
    # 2: a reply keeps the model that wrote it and what it cost (Stats.as_dict, JSON)
    """
    ALTER TABLE messages ADD COLUMN model TEXT NOT NULL DEFAULT '';
    ALTER TABLE messages ADD COLUMN stats TEXT;
    """,
    # 3: full-text search over every message (tasks/search.py)
    FTS_SCHEMA,
    # 4: a conversation keeps its unsent draft, and where all of its text has been sent
    #    ('': some of it never left this machine; else the server's host:port), so the
    #    app asks before a server is sent a chat written here
    """
    ALTER TABLE conversations ADD COLUMN draft TEXT NOT NULL DEFAULT '';
    ALTER TABLE conversations ADD COLUMN sent_to TEXT NOT NULL DEFAULT '';
    """,
)
SCHEMA_VERSION = len(UPGRADES)
NEW_TITLE = "New chat"  # until the first message names it


@dataclass
class Message:
    """One turn, stored or not: the plain chat keeps them in memory, the app in SQLite."""

    id: int | None
    role: str  # system | user | assistant
    content: str
    complete: bool = True  # False: stopped, or still being written
    model: str = ""  # the model that wrote a reply
    stats: dict | None = None  # what the reply cost (Stats.as_dict())


@dataclass
class Conversation:
    id: int | None
    title: str
    system: str = ""
    sampling: dict = field(default_factory=dict)  # Sampling fields this chat overrides
    model: str = ""  # the model of its latest reply
    updated: float = 0.0
    messages: list[Message] = field(default_factory=list)  # filled by Store.load, or in memory
    draft: str = ""  # what the user typed and has not sent yet
    sent_to: str = ""  # the server all of it has been sent to ('': not all, or none)

    def prompt(self) -> list[dict]:
        """What the engine is given: the system prompt, then the user and assistant turns."""
        return prompt(self.system, self.messages)


def prompt(system: str, messages: Iterable[Message]) -> list[dict]:
    head = [{"role": "system", "content": system}] if system else []
    return head + [
        {"role": m.role, "content": m.content} for m in messages if m.role in ("user", "assistant")
    ]


def upgrade(db: sqlite3.Connection, path: Path) -> int:
    """Bring the database to SCHEMA_VERSION, one numbered upgrade at a time, each in a
    transaction (two processes opening it at once take turns); returns the version."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"{path} was written by a newer edgechat (schema {version}, this one knows "
            f"{SCHEMA_VERSION}); update edgechat to open it"
        )
    while version < SCHEMA_VERSION:
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]  # another may have won
            if version < SCHEMA_VERSION:
                for statement in _statements(UPGRADES[version]):
                    db.execute(statement)
                version += 1
                db.execute(f"PRAGMA user_version = {version}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return version


def _statements(script: str) -> list[str]:
    """A script cut into whole statements (a trigger's BEGIN ... END stays one), so an
    upgrade runs inside one transaction; ``executescript`` would commit first."""
    statements, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    if buf.strip():
        statements.append(buf.strip())
    return statements


_MESSAGE = "SELECT id, role, content, complete, model, stats FROM messages"
_CONVERSATION = (
    "SELECT id, title, system, sampling, model, updated, draft, sent_to FROM conversations"
)


def _message(r) -> Message:
    return Message(r[0], r[1], r[2], bool(r[3]), r[4], json.loads(r[5]) if r[5] else None)


def _conversation(r) -> Conversation:
    return Conversation(
        r[0], r[1], r[2], json.loads(r[3] or "{}"), r[4], r[5], draft=r[6], sent_to=r[7]
    )


class Store:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or paths().data_dir / "conversations.db"
        # Locked, damaged, read-only or in the way: see dbopen. ``notice`` says what was done.
        self.version = 0
        self.db, self.notice = open_db(self.path, self._upgrade)
        # The conversations this window shows, held from other windows (tasks/claims.py).
        self.claims = Claims(self.path.with_name(f".{self.path.name}.open"))

    @guarded
    def close(self) -> None:
        self.claims.close()
        self.db.close()

    def _upgrade(self, db: sqlite3.Connection) -> None:
        self.version = upgrade(db, self.path)

    def search(self, text: str, limit: int = 50):
        """Messages across every conversation that hold ``text`` (FTS5), best first."""
        from edgechat.tasks.search import search

        return search(self.db, text, limit)

    # -- conversations --------------------------------------------------------------------

    @guarded
    def create(self, title: str = NEW_TITLE, system: str = "", model: str = "") -> Conversation:
        now = time.time()
        cur = self.db.execute(
            "INSERT INTO conversations (title, system, model, created, updated) "
            "VALUES (?, ?, ?, ?, ?)",
            (title, system, model, now, now),
        )
        return Conversation(cur.lastrowid, title, system, {}, model, now)

    @guarded
    def list(self) -> list[Conversation]:
        rows = self.db.execute(f"{_CONVERSATION} ORDER BY updated DESC, id DESC").fetchall()
        return [_conversation(r) for r in rows]

    def has_messages(self) -> bool:
        return self.db.execute("SELECT 1 FROM messages LIMIT 1").fetchone() is not None

    def first_empty(self) -> Conversation | None:
        """The newest conversation with no message yet that no other window holds (and
        now this one does): a new chat reuses it, so empty "New chat" entries do not pile
        up, and two windows never share one."""
        rows = self.db.execute(
            "SELECT c.id FROM conversations c WHERE NOT EXISTS "
            "(SELECT 1 FROM messages m WHERE m.conversation = c.id) "
            "ORDER BY c.updated DESC, c.id DESC"
        ).fetchall()
        return next((self.get(r[0]) for r in rows if self.claims.take(r[0])), None)

    def new_chat(self, system: str = "", model: str = "") -> Conversation:
        """An empty conversation held by this window: a free empty one, else a new one."""
        while True:
            conv = self.first_empty() or self.create(system=system, model=model)
            if self.claims.take(conv.id):  # another window may take a new one first
                return conv

    def get(self, conversation_id: int) -> Conversation | None:
        row = self.db.execute(f"{_CONVERSATION} WHERE id=?", (conversation_id,)).fetchone()
        return _conversation(row) if row else None

    def load(self, conversation_id: int) -> Conversation | None:
        """The conversation with its messages."""
        conv = self.get(conversation_id)
        if conv is not None:
            conv.messages = self.messages(conversation_id)
        return conv

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
    def save_draft(self, conversation_id: int, text: str) -> None:
        """Keep what is typed and not sent yet ('' once it is sent)."""
        self.db.execute("UPDATE conversations SET draft=? WHERE id=?", (text, conversation_id))

    @guarded
    def mark_sent(self, conversation_id: int, where: str) -> None:
        """All of the conversation has been sent to ``where`` (a server's host:port), or
        ('') it holds text that never left this machine."""
        self.db.execute("UPDATE conversations SET sent_to=? WHERE id=?", (where, conversation_id))

    @guarded
    def delete(self, conversation_id: int) -> None:
        self.db.execute("DELETE FROM conversations WHERE id=?", (conversation_id,))
        self.claims.drop(conversation_id, forget=True)

    # -- messages -------------------------------------------------------------------------

    @guarded
    def messages(self, conversation_id: int) -> list[Message]:
        rows = self.db.execute(
            f"{_MESSAGE} WHERE conversation=? ORDER BY id", (conversation_id,)
        ).fetchall()
        return [_message(r) for r in rows]

    @guarded
    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        complete: bool = True,
        model: str = "",
        stats: dict | None = None,
        title: str | None = None,
    ) -> int:
        """Append a message; a reply's ``model`` becomes the conversation's model too, and
        the first thing the user says (a message, a summary asked for) names a new chat
        (``title``, else the message's first line)."""
        now = time.time()
        if role == "user":
            self.db.execute(
                "UPDATE conversations SET title=? WHERE id=? AND title=? AND NOT EXISTS "
                "(SELECT 1 FROM messages WHERE conversation=? AND role='user')",
                (title or title_of(content), conversation_id, NEW_TITLE, conversation_id),
            )
        cur = self.db.execute(
            "INSERT INTO messages (conversation, role, content, complete, created, model, stats) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (conversation_id, role, content, int(complete), now, model, _json(stats)),
        )
        self.db.execute(
            "UPDATE conversations SET updated=?, model=CASE WHEN ?='' THEN model ELSE ? END "
            "WHERE id=?",
            (now, model, model, conversation_id),
        )
        return cur.lastrowid

    @guarded
    def delete_messages_from(self, conversation_id: int, message_id: int) -> None:
        """Forget a message and every later one (regenerate, edit and resend)."""
        self.db.execute(
            "DELETE FROM messages WHERE conversation=? AND id>=?", (conversation_id, message_id)
        )

    @guarded
    def update_message(
        self, message_id: int, content: str, complete: bool = False, stats: dict | None = None
    ) -> None:
        self.db.execute(
            "UPDATE messages SET content=?, complete=?, stats=COALESCE(?, stats) WHERE id=?",
            (content, int(complete), _json(stats), message_id),
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


def title_of(text: str) -> str:
    """A chat's title from what opened it: its first line, cut short."""
    return (text.strip().splitlines() or [NEW_TITLE])[0][:40]


def _json(value: dict | None) -> str | None:
    return json.dumps(value) if value is not None else None
