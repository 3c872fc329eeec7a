"""What a newcomer found in the app (issue 23), walked with Pilot on the real starter model:
the picker shows `recommend`'s ranking and rounding, a screenshot in a fresh home, the
title of a chat a summary started, and two windows on one home keeping their own chats."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest
from support.app import make_app as _make_app
from support.app import until
from support.cli import REPO, run_cli
from support.devices import simulated_device
from textual.widgets import DataTable

from edgechat.facts.device import GiB
from edgechat.tui.wizard import WizardScreen

pytestmark = pytest.mark.model


def make_app(**options):
    return _make_app(**{"threads": 1, **options})


# -- 10. the picker and `recommend`: one ranking, one rounding ---------------------------

PI = simulated_device(
    board="Raspberry Pi 4 Model B Rev 1.4",  # a slow board: big models run below 1 token/s
    ram_total=16 * GiB,
    ram_available=14 * GiB,
    simd=("NEON",),
    arch="aarch64",
    overrides=("memory=16.0 GiB",),
)


async def test_the_picker_shows_the_ranking_and_figures_recommend_prints(starter_path):
    from edgechat.planning.recommend import speed_text
    from edgechat.planning.speed import cpu_bandwidth
    from edgechat.service import recommendations

    app = make_app(start="auto", device=PI)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, WizardScreen) and app.screen.rows)
        await until(pilot, lambda: len(app.screen.rows) > 1)
        table = app.screen.query_one(DataTable)
        shown = {
            app.screen.rows[i]: str(table.get_row_at(i)[3]) for i in range(len(app.screen.rows))
        }
        order = list(app.screen.rows)
        marks = {row: str(table.get_row_at(i)[5]) for i, row in enumerate(order)}
    ranked = recommendations(PI, "chat", app.request.ctx, "f16", cpu_bandwidth(PI))[:15]
    assert order[: len(ranked)] == [c.id for c in ranked]  # the same order
    assert marks["smollm2-135m-instruct:Q4_1"] == "●"  # installed: marked, not moved up
    for c in ranked:
        assert shown[c.id] == speed_text(c.speed.tokens_per_s)
    assert any(c.speed.tokens_per_s < 3 for c in ranked)  # slower than reading, on a Pi
    assert speed_text(0.3) == "0.3" and speed_text(12.4) == "12"  # never "0" tokens/s


# -- 3. a screenshot in a fresh home: saved where it can be, and where is said ------------


async def _screenshot(app, pilot) -> str:
    from textual.command import CommandInput
    from textual.widgets import Input

    await pilot.press("ctrl+p")
    await pilot.pause(0.3)
    box = app.screen.query_one(CommandInput)
    box.value = "Screenshot"
    box.post_message(Input.Submitted(box, box.value))
    await until(pilot, lambda: any("screenshot" in n.message for n in app._notifications))
    return next(n.message for n in app._notifications if "screenshot" in n.message)


@pytest.mark.parametrize("where", ["downloads", "current folder", "data dir"])
async def test_a_screenshot_is_saved_where_it_can_be_and_says_where(
    starter_path, tmp_path, monkeypatch, edgechat_home, where
):
    home = tmp_path / "fresh-home"  # no Downloads folder, as in a fresh account
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_DOWNLOAD_DIR", raising=False)
    cwd = tmp_path / "work"
    cwd.mkdir()
    expected = {"downloads": home / "Downloads", "current folder": cwd}
    if where == "downloads":
        (home / "Downloads").mkdir()
    monkeypatch.chdir(cwd if where != "data dir" else "/proc")  # /proc takes no file
    expected["data dir"] = edgechat_home / "data"
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        said = await _screenshot(app, pilot)
    assert said.startswith(f"screenshot saved to {expected[where]}/"), said
    saved = list(expected[where].glob("edgechat_*.svg"))
    assert len(saved) == 1 and saved[0].read_text().startswith("<svg")


# -- 1. two windows on one home keep their own chats -------------------------------------


def _by_title() -> dict[str, list[tuple[str, str]]]:
    from edgechat.tasks.conversations import Store

    store = Store()
    try:
        return {c.title: [(m.role, m.content) for m in store.messages(c.id)] for c in store.list()}
    finally:
        store.close()


def _users(chats: dict) -> list[list[str]]:
    return [[text for role, text in turns if role == "user"] for turns in chats.values()]


async def test_two_windows_on_one_home_keep_their_own_chats(starter_path):
    from edgechat import config
    from edgechat.tui.chat import ChatScreen

    config.set_value("max_tokens", "8")
    one, two = make_app(), make_app()
    async with one.run_test(size=(80, 24)) as p1:
        await until(p1, lambda: one.engine is not None and isinstance(one.screen, ChatScreen))
        async with two.run_test(size=(80, 24)) as p2:
            await until(p2, lambda: two.engine is not None and isinstance(two.screen, ChatScreen))
            # The second window does not open the first one's chat, and says why.
            assert two.screen.conversation.id != one.screen.conversation.id
            assert any("open in another window" in n.message for n in two._notifications)
            await p1.press("ctrl+n")
            await p2.press("ctrl+n")  # neither reuses the other's empty chat
            assert two.screen.conversation.id != one.screen.conversation.id
            for pilot, words in ((p1, "Hello from d1"), (p2, "Hello from d2")):
                await pilot.press(*words, "enter")
            for app, pilot in ((one, p1), (two, p2)):
                await until(pilot, lambda app=app: not app.screen.generating)
            # A chat held by the other window is not opened from the sidebar either.
            assert not two.screen.open_conversation(one.screen.conversation.id)
    chats = _by_title()
    assert sorted(_users(chats)) == [["Hello from d1"], ["Hello from d2"]], chats
    again = make_app()  # a relaunch opens one window's chat, not a mix
    async with again.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(again.screen, ChatScreen))
        shown = [m.content for m in again.store.messages(again.screen.conversation.id)]
    assert shown[0] in ("Hello from d1", "Hello from d2") and shown.count(shown[0]) == 1


@pytest.mark.tmux
@pytest.mark.subprocess
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_two_app_processes_under_tmux_keep_their_own_chats(edgechat_home, starter_path):
    """The real thing: two `edgechat chat` processes in two terminals on one home."""
    run_cli("config", "set", "max_tokens", "8")
    tag = time.monotonic_ns()
    sessions = [f"d1-{tag}", f"d2-{tag}"]
    cmd = f"cd {REPO} && env EDGECHAT_HOME={edgechat_home} {sys.executable} -m edgechat chat"

    def screen(session: str) -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True
        ).stdout

    def wait_for(session: str, words: str) -> None:
        deadline = time.monotonic() + 90
        while words not in screen(session):
            assert time.monotonic() < deadline, screen(session)
            time.sleep(0.2)

    try:
        for session in sessions:
            subprocess.run(
                ["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", cmd],
                check=True,
            )
            wait_for(session, "edgechat · smollm2")
        for session in sessions:
            subprocess.run(["tmux", "send-keys", "-t", session, "C-n"])
        time.sleep(2)  # both new chats are open before either window writes
        for n, session in enumerate(sessions, 1):
            subprocess.run(["tmux", "send-keys", "-t", session, f"Hello from d{n}", "Enter"])
            wait_for(session, "tok/s")  # the reply's figures: it ended
    finally:
        for session in sessions:
            subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    chats = _by_title()
    assert sorted(_users(chats)) == [["Hello from d1"], ["Hello from d2"]], chats


# -- 12. a chat a summary started is named after the document ---------------------------


async def test_a_chat_started_by_a_summary_is_named_after_the_document(starter_path, tmp_path):
    from edgechat import config

    doc = tmp_path / "minutes.md"
    doc.write_text("The council met on Tuesday and agreed the library budget.\n")
    config.set_value("max_tokens", "16")  # the follow-up's length is not the point
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        screen = app.screen
        assert screen.conversation.title == "New chat"
        screen._summarise(str(doc))
        await pilot.pause()
        await until(pilot, lambda: not screen.generating)
        assert screen.conversation.title == "Summary of minutes.md" == screen.sub_title
        assert app.store.get(screen.conversation.id).title == "Summary of minutes.md"
        await pilot.press(*"And the budget?", "enter")  # a later message renames nothing
        await until(pilot, lambda: not screen.generating)
        assert app.store.get(screen.conversation.id).title == "Summary of minutes.md"
