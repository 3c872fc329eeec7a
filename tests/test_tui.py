"""The Textual app on the real starter model: Pilot walks the flows, snapshots pin the
screens, and one test drives it in a real terminal under tmux."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from support.app import LAPTOP, conversation_text, hold_still, make_app, until
from support.cli import REPO, run_main

from edgechat.facts.device import GPU, GiB
from edgechat.tasks.conversations import Store
from edgechat.tui.chat import ChatScreen
from edgechat.tui.wizard import WizardScreen


async def test_wizard_to_chat_send_and_reply(starter_path):
    app = make_app(start="auto")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, WizardScreen))
        wizard = app.screen
        # Installed models are marked and ranked on their merits, not moved up (issue 31).
        row = wizard.rows.index("smollm2-135m-instruct:Q4_1")
        assert any(":Q4_K_M" in r for r in wizard.rows)  # among the recommendations
        wizard.query_one("#choices").move_cursor(row=row)
        await pilot.press("enter")
        await until(pilot, lambda: app.engine is not None and isinstance(app.screen, ChatScreen))
        assert app.model_id == "smollm2-135m-instruct:Q4_1"
        await pilot.press(*"What is the capital of France?", "enter")
        await until(
            pilot, lambda: not app.screen.generating and "## Assistant" in conversation_text(app)
        )
        await until(pilot, lambda: not app.screen.generating)
        messages = app.store.messages(app.screen.conversation.id)
        assert [m.role for m in messages] == ["user", "assistant"]
        assert messages[1].content.strip() and messages[1].complete
        assert app.screen.conversation.title == "What is the capital of France?"
        bubbles = app.screen.query(".assistant")
        assert bubbles and bubbles.last().source.strip() == messages[1].content.strip()


async def test_picker_pulls_a_recommended_model_then_chats(starter_path, monkeypatch, tmp_path):
    from support.hubserver import Hub

    repo, name = "bartowski/SmolLM2-360M-Instruct-GGUF", "SmolLM2-360M-Instruct-Q4_K_M.gguf"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with Hub({repo: {name: starter_path}}) as hub:  # the starter's bytes stand in for it
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        small = replace(LAPTOP, ram_total=GiB, ram_available=GiB)  # where a 360M model ranks high
        app = make_app(start="auto", device=small)
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, WizardScreen))
            wizard = app.screen
            row = wizard.rows.index("smollm2-360m-instruct:Q4_K_M")
            wizard.query_one("#choices").move_cursor(row=row)
            await pilot.press("enter")
            await until(pilot, lambda: app.model_id == "smollm2-360m-instruct:Q4_K_M")
            assert isinstance(app.screen, ChatScreen) and app.engine is not None
            await pilot.press(*"Hi", "enter")
            await until(
                pilot,
                lambda: (
                    not app.screen.generating
                    and len(app.store.messages(app.screen.conversation.id)) == 2
                ),
            )
    from edgechat.models import registry

    assert "smollm2-360m-instruct:Q4_K_M" in registry.installed()


async def test_stop_keeps_the_partial_reply(starter_path):
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        screen = app.screen
        app.store.configure(screen.conversation.id, "", {"max_tokens": 2000, "temperature": 0.8})
        # The reply cannot end before Escape, however busy the machine: a grammar holds it
        # to lower-case words of 20,000 letters at least (the subject is the stop, not what
        # the model writes; it wrote 59 tokens and stopped first on a busy CI runner).
        screen.conversation.sampling = {
            "max_tokens": 2000,
            "temperature": 0.8,
            "grammar": "start: /[a-z ]{20000,}/",
        }
        await pilot.press(*"Write a very long story about the sea.", "enter")
        await until(pilot, lambda: len(screen._reply_text) > 20)
        await pilot.press("escape")
        await until(pilot, lambda: not screen.generating)
        reply = app.store.messages(screen.conversation.id)[-1]
        assert reply.role == "assistant" and reply.content and not reply.complete
        assert set(reply.content) <= set("abcdefghijklmnopqrstuvwxyz ")  # under the grammar
        assert screen.query(".assistant").last().has_class("stopped")
        # The app answered keys while generating: a second chat can start right after.
        await pilot.press("ctrl+n")
        assert len(app.store.list()) == 2


async def test_reopen_a_stored_conversation_history_and_export(tmp_path, starter_path):
    store = Store()
    conv = store.create("Trip planning")
    store.add_message(conv.id, "user", "Where should I go in May?")
    store.add_message(conv.id, "assistant", "**Lisbon** is lovely in May.")
    other = store.create("Other")
    store.close()
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        screen = app.screen
        assert screen.conversation.id == other.id  # the newest first
        items = screen.query_one("#conversations").children
        assert [i.name for i in items] == [str(other.id), str(conv.id)]
        screen.open_conversation(conv.id)
        await pilot.pause()
        assert screen.query(".assistant").last().source == "**Lisbon** is lovely in May."
        # Up recalls what was sent in this session.
        await pilot.press(*"hello", "enter")
        await until(pilot, lambda: not screen.generating and len(app.store.messages(conv.id)) == 4)
        await pilot.press("up")
        assert screen.query_one("#input").text == "hello"
        target = tmp_path / "trip.md"
        screen.action_export()
        await pilot.pause()
        app.screen.query_one("#answer").value = str(target)
        await pilot.press("enter")
        await pilot.pause()
        text = target.read_text()
        assert text.startswith("# Trip planning") and "**Lisbon** is lovely in May." in text


async def test_summarise_a_file_from_the_command_palette(tmp_path, starter_path):
    doc = tmp_path / "minutes.md"
    doc.write_text(
        "The council met on Tuesday. The library will cost four million euros "
        "and open in 2027.\n\nResidents asked for a children's section.\n"
    )
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        await pilot.press("ctrl+p")
        await pilot.press(*"Summarise a file")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await until(pilot, lambda: app.screen.query("#answer"))
        app.screen.query_one("#answer").value = str(doc)
        await pilot.press("enter")
        screen = app.screen
        await until(
            pilot,
            lambda: not screen.generating and len(app.store.messages(screen.conversation.id)) == 2,
        )
        user, answer = app.store.messages(screen.conversation.id)
        assert user.content == f"Summarise {doc}" and "chunk(s)" in answer.content
        assert screen.query(".assistant").last().source == answer.content


async def test_a_model_that_does_not_fit_is_refused_with_the_way_out(starter_path):
    tiny = replace(LAPTOP, ram_total=100 * 2**20, ram_available=100 * 2**20)
    app = make_app(device=tiny)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, WizardScreen))
        assert app.engine is None
        notes = [n.message for n in app._notifications]
        assert any("will not fit" in n and "--force" in n for n in notes)


async def test_chat_in_the_app_opens_no_network_connection(starter_path, monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        await pilot.press(*"Hi", "enter")
        await until(
            pilot,
            lambda: (
                not app.screen.generating
                and len(app.store.messages(app.screen.conversation.id)) == 2
            ),
        )
    assert attempts == []


def test_readouts_sample_real_memory():
    from edgechat.facts.readouts import Sampler

    r = Sampler()()
    assert 10 * 2**20 < r.rss < r.ram_total and r.ram_available > 0


# -- snapshots ------------------------------------------------------------------------------


def _stored_chat() -> None:
    store = Store()
    conv = store.create("Library plans")
    store.add_message(conv.id, "user", "When does the new library open?")
    store.add_message(
        conv.id,
        "assistant",
        "The library opens in **2027**.\n\n- cost: four million euros\n- children's section",
    )
    store.close()


async def _loaded(pilot) -> None:
    """The screen has followed the load (the engine alone is set a message earlier)."""
    app = pilot.app
    await until(pilot, lambda: app.engine is not None and app.model_state.engine is app.engine)
    await until(pilot, lambda: not app.screen.query_one("#input").waiting)
    await pilot.pause()
    app.clear_notifications()
    hold_still(pilot.app.screen.query_one("#input"))  # a blink is not a change
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (140, 40)])
def test_snapshot_chat(snap_compare, starter_path, size):
    _stored_chat()
    assert snap_compare(make_app(), terminal_size=size, run_before=_loaded)


def test_snapshot_wizard(snap_compare, starter_path):
    rtx = GPU("nvidia", "NVIDIA GeForce RTX 4060", 8 * GiB, 8 * GiB)
    nvidia = replace(LAPTOP, gpus=(rtx,), llama_backends=("cuda", "cpu"), gpu_offload=True)

    async def shown(pilot):
        await until(pilot, lambda: isinstance(pilot.app.screen, WizardScreen))
        await pilot.pause()

    assert snap_compare(
        make_app(start="auto", device=nvidia), terminal_size=(80, 24), run_before=shown
    )


# -- a real terminal ---------------------------------------------------------------------------


@pytest.mark.tmux
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
@pytest.mark.parametrize(
    "colours",
    [
        "TERM=xterm-256color",
        "TERM=xterm-256color NO_COLOR=1",
        "TERM=xterm TEXTUAL_COLOR_SYSTEM=standard",
    ],
    ids=["256-colours", "no-color", "16-colours"],
)
def test_in_a_real_terminal_under_tmux(edgechat_home, starter_path, colours):
    # Greedy, so the small model's answer is the same every run.
    run_main("config", "set", "temperature", "0")
    session = f"edgechat-test-{time.monotonic_ns()}"
    env = f"EDGECHAT_HOME={edgechat_home} {colours}"
    cmd = f"cd {REPO} && env {env} {sys.executable} -m edgechat chat"
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", cmd], check=True
    )

    def screen() -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True
        ).stdout

    try:
        deadline = time.monotonic() + 60
        while "edgechat · smollm2" not in screen():
            assert time.monotonic() < deadline, screen()
            time.sleep(0.2)
        subprocess.run(["tmux", "send-keys", "-t", session, "What is the capital of France?"])
        subprocess.run(["tmux", "send-keys", "-t", session, "Enter"])
        while "tok/s" not in screen():  # the reply has finished: its speed is shown
            assert time.monotonic() < deadline, screen()
            time.sleep(0.2)
        text = screen()
        assert "What is the capital of France?" in text and "RSS" in text and "ctx" in text
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
