"""Nothing typed or received is lost when the app dies with no Python running after it
(issue 29, item 4: a native fault in llama.cpp): the conversation on disk is complete up
to the fault at every moment. The user's message is stored before its reply starts, the
reply is written into its own row as it streams (marked incomplete until it ends), and
the unsent draft is kept beside its chat and comes back when the chat opens again.

The FakeEngine tests read the database from a second connection while the app runs, as
whatever outlives a crash would; the tmux tests kill the real app mid-reply (SIGKILL,
SIGSEGV) and open the same home again."""

from __future__ import annotations

import contextlib
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from support.app import FakeOpener, fake_app, until
from support.cli import REPO, run_main
from textual.widgets import Label

from edgechat.tasks.conversations import Store
from edgechat.tui.chat import UNFINISHED

LONG = "The sea was grey and the ships came home one by one. " * 20


def _on_disk(path: Path) -> dict:
    """What another process reads in the database now: the messages of the newest chat
    with any, and every chat's draft."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        drafts = dict(db.execute("SELECT id, draft FROM conversations").fetchall())
        rows = db.execute(
            "SELECT role, content, complete FROM messages WHERE conversation = "
            "(SELECT conversation FROM messages ORDER BY id DESC LIMIT 1) ORDER BY id"
        ).fetchall()
    finally:
        db.close()
    return {"messages": rows, "drafts": drafts}


async def test_the_message_and_the_streaming_reply_are_on_disk_as_they_come():
    app = fake_app(FakeOpener(respond=LONG, delay=0.01))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        screen, path = app.screen, app.store.path
        await pilot.press(*"Tell me about the sea.", "enter")
        await until(pilot, lambda: screen._reply_text)  # the reply has started
        rows = _on_disk(path)["messages"]
        assert rows[0] == ("user", "Tell me about the sea.", 1)  # stored before it
        seen = []
        while screen.generating:  # the reply's row grows while it streams, incomplete
            role, content, complete = _on_disk(path)["messages"][1]
            seen.append(content)
            assert role == "assistant" and not complete and LONG.startswith(content)
            await pilot.pause(0.1)
        assert len({s for s in seen if s}) >= 3, "the row was not written as it streamed"
        assert _on_disk(path)["messages"][1] == ("assistant", LONG, 1)  # the same row, ended


async def test_the_draft_is_kept_per_chat_and_comes_back():
    app = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        screen, path = app.screen, app.store.path
        box = screen.query_one("#input")
        await pilot.press(*"Hello", "enter")
        await until(pilot, lambda: not screen.generating)
        first = screen.conversation.id
        await pilot.press(*"half a thought")
        await until(pilot, lambda: _on_disk(path)["drafts"].get(first) == "half a thought")
        await pilot.press("ctrl+n")  # another chat: its own (empty) draft
        await until(pilot, lambda: box.text == "")
        await pilot.press(*"a new chat's draft")
        second = screen.conversation.id
        screen.open_conversation(first)  # back: the draft is there, the other one kept
        await pilot.pause()
        assert box.text == "half a thought"
        assert app.store.get(second).draft == "a new chat's draft"  # kept, though no message
        await pilot.press("up")  # walking the history keeps the draft as it was on disk
        await pilot.pause(0.5)
        assert box.text == "Hello" and _on_disk(path)["drafts"][first] == "half a thought"
        await pilot.press("down", "enter")
        await until(pilot, lambda: not screen.generating)
        assert _on_disk(path)["drafts"][first] == ""  # sent: no longer a draft
    again = fake_app()
    async with again.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: again.engine is not None)
        again.screen.open_conversation(second)
        await pilot.pause()
        assert again.screen.query_one("#input").text == "a new chat's draft"


async def test_a_reply_cut_by_a_crash_reopens_cut_and_continues():
    store = Store()  # as a crash leaves it: the reply's row, incomplete
    conv = store.create("The sea")
    store.add_message(conv.id, "user", "Tell me about the sea.")
    cut = store.add_message(conv.id, "assistant", "The sea was grey and", complete=False)
    store.save_draft(conv.id, "and the ships?")
    store.close()
    app = fake_app(FakeOpener(respond=" the ships came home."))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        screen = app.screen
        assert screen.conversation.id == conv.id
        assert screen.query_one("#input").text == "and the ships?"
        said = [str(label.render()) for label in screen.query(".unfinished").results(Label)]
        assert said == [UNFINISHED[None]] and "Ctrl+G continues" in said[0]
        await pilot.press("ctrl+g")
        await until(pilot, lambda: not screen.generating and not screen.query(".unfinished"))
        reply = app.store.messages(conv.id)[-1]
        assert reply.id == cut and reply.complete
        assert reply.content == "The sea was grey and the ships came home."


# -- the real app, killed mid-reply ----------------------------------------------------------


def _app_process(pane: int) -> psutil.Process:
    """The process running the app: the deepest `edgechat chat` under the terminal's (a
    supervisor's child where `edgechat` supervises its command), not a helper of its."""
    top = psutil.Process(pane)
    found = [p for p in [top, *top.children(True)] if p.cmdline()[-3:] == top.cmdline()[-3:]]
    return max(found, key=lambda p: len(p.parents()))


@pytest.mark.tmux
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL], ids=["SIGSEGV", "SIGKILL"])
def test_the_app_killed_mid_reply_keeps_the_chat_and_the_draft(edgechat_home, starter_path, sig):
    run_main("config", "set", "max_tokens", "300")
    session = f"edgechat-kept-{time.monotonic_ns()}"
    cmd = (
        f"cd {REPO} && exec env EDGECHAT_HOME={edgechat_home} PYTHONPATH={REPO} "
        f"TERM=xterm-256color {sys.executable} -m edgechat chat"
    )

    def tmux(*args) -> str:
        return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout

    def screen() -> str:
        return tmux("capture-pane", "-p", "-t", session)

    def wait_for(text: str, seconds: float = 90) -> str:
        deadline = time.monotonic() + seconds
        while text not in (shown := screen()):
            assert time.monotonic() < deadline, f"{text!r} never came:\n{shown}"
            time.sleep(0.2)
        return shown

    question = "Write a long story about a lighthouse keeper and the sea."
    path = edgechat_home / "data" / "conversations.db"
    try:
        tmux("new-session", "-d", "-s", session, "-x", "80", "-y", "24", cmd)
        wait_for("is ready")
        tmux("send-keys", "-t", session, question, "Enter")
        deadline = time.monotonic() + 90
        while len(_reply(path)) < 80:  # the reply is streaming, and on disk as it comes
            assert time.monotonic() < deadline, screen()
            time.sleep(0.2)
        tmux("send-keys", "-t", session, "my next question, not sent")  # typed meanwhile
        time.sleep(1.5)  # the draft's pause, and a few more saves of the reply
        shown = [line.strip(" █▌") for line in screen().splitlines()]
        app = _app_process(int(tmux("display", "-p", "-t", session, "#{pane_pid}").strip()))
        app.send_signal(sig)
        app.wait(30)
        rows = _on_disk(path)
        (user, reply), draft = rows["messages"], set(rows["drafts"].values()) - {""}
        assert user == ("user", question, 1)
        assert reply[0] == "assistant" and not reply[2]  # cut: marked incomplete
        text = " ".join(reply[1].split())
        words = [line for line in shown if len(line) > 20 and line in text]
        assert words, (shown, text)  # what was on screen before the kill is on disk
        assert draft == {"my next question, not sent"}
        _end(session)
        # Opened again: the chat with its cut reply, marked so, and the draft in the box.
        tmux("new-session", "-d", "-s", session, "-x", "80", "-y", "24", cmd)
        assert "unfinished reply" in wait_for("Ctrl+G continues")
        wait_for("my next question, not sent")
        wait_for("edgechat · smollm2")  # the model is loaded: Ctrl+G writes more of it
        tmux("send-keys", "-t", session, "C-g")
        deadline = time.monotonic() + 120
        while len(longer := _reply(path)) < len(reply[1]) + 40:  # more of the same reply
            assert time.monotonic() < deadline, screen()
            time.sleep(0.2)
        assert longer.startswith(reply[1].rstrip())
    finally:
        _end(session)


def _end(session: str) -> None:
    """Close the session, and the app in it: a closed terminal's hangup reaches only the
    supervisor `edgechat` runs as (the session leader), which leaves its child running."""
    pane = subprocess.run(
        ["tmux", "display", "-p", "-t", session, "#{pane_pid}"], capture_output=True, text=True
    ).stdout.strip()
    if pane:
        with contextlib.suppress(psutil.Error):
            for process in [*psutil.Process(int(pane)).children(True), psutil.Process(int(pane))]:
                process.kill()
    subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def _reply(path: Path) -> str:
    """The newest reply's text on disk ('' before there is one)."""
    if not path.exists():
        return ""
    rows = _on_disk(path)["messages"]
    return rows[1][1] if len(rows) > 1 else ""
