"""The conversation database: one Conversation/Message type, a versioned schema that
upgrades a database from an older edgechat in place."""

from __future__ import annotations

import sqlite3

import pytest

from edgechat.errors import ConfigError
from edgechat.tasks.conversations import (
    SCHEMA_VERSION,
    UPGRADES,
    Conversation,
    Message,
    Store,
)

# What edgechat wrote before the schema had a version (user_version 0).
UNVERSIONED = """
CREATE TABLE conversations (id INTEGER PRIMARY KEY, title TEXT NOT NULL,
    system TEXT NOT NULL DEFAULT '', sampling TEXT NOT NULL DEFAULT '{}',
    model TEXT NOT NULL DEFAULT '', created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE messages (id INTEGER PRIMARY KEY,
    conversation INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL, content TEXT NOT NULL, complete INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL);
INSERT INTO conversations VALUES (1, 'Old chat', 'Be brief.', '{"temperature": 0.2}', '', 1, 2);
INSERT INTO messages VALUES (1, 1, 'user', 'Hello', 1, 1), (2, 1, 'assistant', 'Hi!', 0, 2);
"""


def test_an_unversioned_database_is_upgraded_in_place(tmp_path):
    path = tmp_path / "conversations.db"
    old = sqlite3.connect(path)
    old.executescript(UNVERSIONED)
    old.close()
    store = Store(path)
    assert store.version == SCHEMA_VERSION == len(UPGRADES)
    conv = store.load(1)
    assert (conv.title, conv.system, conv.sampling) == (
        "Old chat",
        "Be brief.",
        {"temperature": 0.2},
    )
    assert [(m.role, m.content, m.complete) for m in conv.messages] == [
        ("user", "Hello", True),
        ("assistant", "Hi!", False),
    ]
    # What the new columns hold: the model of a reply, and what it cost.
    reply = store.add_message(1, "assistant", "", complete=False, model="smollm2:Q4_1")
    store.update_message(reply, "Done.", complete=True, stats={"gen_tokens": 2})
    store.close()
    again = Store(path)  # opening an up-to-date database changes nothing
    conv = again.load(1)
    assert conv.model == "smollm2:Q4_1"
    assert (conv.messages[-1].model, conv.messages[-1].stats) == ("smollm2:Q4_1", {"gen_tokens": 2})
    assert conv.prompt() == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi!"},
        {"role": "assistant", "content": "Done."},
    ]
    again.close()


def test_a_database_from_a_newer_edgechat_is_refused_untouched(tmp_path):
    path = tmp_path / "conversations.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(ConfigError, match="newer edgechat"):
        Store(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_one_type_in_memory_and_on_disk():
    conv = Conversation(None, "", "Be brief.")
    conv.messages += [Message(None, "user", "Hi"), Message(None, "assistant", "Hello")]
    store = Store()
    saved = store.create("Kept", conv.system, model="m")
    for m in conv.messages:
        store.add_message(saved.id, m.role, m.content)
    assert store.load(saved.id).prompt() == conv.prompt()
    store.close()
