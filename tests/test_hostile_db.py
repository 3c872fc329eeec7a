"""The conversation database under lock contention and damage, and the app around it.

A lock held by another process: statements wait, then fail with one line while the
app keeps the typed text; a damaged or truncated file is moved aside with a notice
and a new one started; a data dir that is a file says which path to fix.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from support.app import LAPTOP, READOUT, until

from edgechat.paths import paths
from edgechat.tasks import dbopen
from edgechat.tasks.conversations import Store
from edgechat.tasks.dbopen import StoreBusy, StoreError

HOLD = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


def hold_lock(path, seconds: float) -> subprocess.Popen:
    """Another process holding the database's write lock for ``seconds``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def filled(path) -> Store:
    store = Store(path)
    conv = store.create("kept")
    for i in range(50):
        store.add_message(conv.id, "user", f"message {i} " * 40)
    return store


@pytest.mark.subprocess
def test_a_short_lock_is_waited_for(tmp_path):
    store = Store(tmp_path / "c.db")
    conv = store.create()
    proc = hold_lock(store.path, 0.5)
    store.add_message(conv.id, "user", "hello")  # waits out the lock
    proc.wait(timeout=30)
    assert [m.content for m in store.messages(conv.id)] == ["hello"]


@pytest.mark.subprocess
def test_a_long_lock_is_one_line_and_nothing_is_lost(tmp_path, monkeypatch):
    monkeypatch.setattr(dbopen, "BUSY_S", 0.3)
    store = Store(tmp_path / "c.db")
    conv = store.create()
    proc = hold_lock(store.path, 5)
    with pytest.raises(StoreBusy) as err:
        store.add_message(conv.id, "user", "hello")
    assert "locked by another program" in str(err.value) and "\n" not in str(err.value)
    proc.kill()
    proc.wait(timeout=30)
    store.add_message(conv.id, "user", "hello")
    assert [m.content for m in store.messages(conv.id)] == ["hello"]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "zeroed-header"])
def test_a_damaged_database_is_moved_aside_and_a_new_one_started(tmp_path, damage):
    path = tmp_path / "c.db"
    filled(path).close()
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 3])
    else:
        path.write_bytes(b"\0" * 100 + data[100:])
    damaged = path.read_bytes()
    store = Store(path)
    assert store.notice and "moved to" in store.notice
    aside = next(tmp_path.glob("c.db.damaged-*"))
    assert aside.read_bytes() == damaged  # kept for the user, not deleted
    conv = store.create()
    store.add_message(conv.id, "user", "fresh start")
    assert store.messages(conv.id)[0].content == "fresh start"
    assert Store(path).notice is None  # the new one is sound


def test_data_dir_that_is_a_file_names_it(tmp_path):
    blocker = tmp_path / "data"
    blocker.write_text("I am a file")
    with pytest.raises(StoreError, match=f"{blocker} is a file"):
        Store(blocker / "conversations.db")


def test_read_only_database_says_which_folder(tmp_path):
    path = tmp_path / "c.db"
    Store(path).close()
    ro = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as raw:
        ro.execute("INSERT INTO conversations (title, created, updated) VALUES ('x', 0, 0)")
    message = str(dbopen.explain(raw.value, path))
    assert "read-only" in message and str(tmp_path) in message


def test_app_with_data_dir_as_a_file_is_one_line(edgechat_home):
    data = paths().data_dir
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("not a folder")
    from edgechat.tui.app import EdgechatApp, LaunchOptions

    with pytest.raises(StoreError, match="is a file where edgechat keeps its data"):
        EdgechatApp(LaunchOptions(start="chat"), sample_readouts=lambda: READOUT, device=LAPTOP)


@pytest.mark.subprocess
async def test_app_keeps_the_typed_text_while_the_database_is_locked(
    engine, monkeypatch, edgechat_home
):
    from edgechat.tui.app import EdgechatApp, LaunchOptions
    from edgechat.tui.chat import ChatInput, ChatScreen

    monkeypatch.setattr(dbopen, "BUSY_S", 0.2)
    app = EdgechatApp(
        LaunchOptions(start="chat"), sample_readouts=lambda: READOUT, device=LAPTOP, engine=engine
    )
    app.sampling = replace(app.sampling, max_tokens=8, temperature=0.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None and isinstance(app.screen, ChatScreen))
        proc = hold_lock(app.store.path, 30)
        try:
            await pilot.press(*"Keep this text", "enter")
            await until(pilot, lambda: app.screen.query_one(ChatInput).text == "Keep this text")
            assert not app.screen.generating
        finally:
            proc.kill()
            proc.wait(timeout=30)
        await pilot.press("enter")
        await until(pilot, lambda: app.screen.generating or app.screen.query(".assistant"))
        await until(pilot, lambda: not app.screen.generating)
        messages = app.store.messages(app.screen.conversation.id)
        assert [m.content for m in messages if m.role == "user"] == ["Keep this text"]


def test_store_open_is_quick_on_a_sound_database(tmp_path):
    filled(tmp_path / "c.db").close()
    started = time.monotonic()
    Store(tmp_path / "c.db").close()
    assert time.monotonic() - started < 30  # the integrity check reads, it does not hang
