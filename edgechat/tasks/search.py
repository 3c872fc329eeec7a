"""Full-text search across every conversation: an SQLite FTS5 index over the messages.

The index is an external-content table kept in step by triggers, so the messages are
stored once and a reply that streams in (rewritten once a second) stays searchable.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

# Applied as one numbered upgrade of the conversation database.
FTS_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(
    content, content='messages', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER IF NOT EXISTS messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;
CREATE TRIGGER IF NOT EXISTS messages_fts_update AFTER UPDATE OF content ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
END;
INSERT INTO messages_fts(messages_fts) VALUES ('rebuild');
"""


@dataclass(frozen=True)
class Hit:
    conversation: int
    title: str
    message: int
    role: str
    snippet: str  # the matching words between [ and ]

    def as_dict(self) -> dict:
        return {
            "conversation": self.conversation,
            "title": self.title,
            "message": self.message,
            "role": self.role,
            "snippet": self.snippet,
        }


def fts_query(text: str) -> str:
    """The user's words as an FTS5 query: every word must occur, the last one may be the
    start of a word (search as you type); quotes keep FTS5 syntax out of their hands."""
    words = re.findall(r"\w+", text)
    if not words:
        return ""
    quoted = [f'"{w}"' for w in words]
    quoted[-1] += "*"
    return " ".join(quoted)


def search(db: sqlite3.Connection, text: str, limit: int = 50) -> list[Hit]:
    """The best-matching messages, best first (FTS5's BM25 rank)."""
    query = fts_query(text)
    if not query:
        return []
    rows = db.execute(
        "SELECT m.conversation, c.title, m.id, m.role, "
        "snippet(messages_fts, 0, '[', ']', '…', 12) "
        "FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
        "JOIN conversations c ON c.id = m.conversation "
        "WHERE messages_fts MATCH ? ORDER BY rank LIMIT ?",
        (query, limit),
    ).fetchall()
    return [Hit(r[0], r[1], r[2], r[3], " ".join(r[4].split())) for r in rows]
