"""What a newcomer trips on in the app (issue 15), walked with Pilot on the real starter
model: the picker's Esc, keys that work from the message box, a delete that asks,
the settings dialog at 80x24, context readouts, regenerate/edit/continue, search,
code blocks, base models, and reopening from a KV snapshot."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest
from support.app import hold_still, until
from support.app import make_app as _make_app
from support.cli import REPO, run_main
from textual.command import CommandInput
from textual.widgets import Button, Input, Label, ProgressBar, TextArea

from edgechat import config
from edgechat.tasks.conversations import Store
from edgechat.tui.chat import ChatScreen
from edgechat.tui.dialogs import Ask, Confirm, Pick, Search, Settings
from edgechat.tui.wizard import WizardScreen

CODE_REPLY = "Two ways:\n\n```python\nprint('a')\n```\n\nor\n\n```sh\necho b\n```\n"


def make_app(**options):
    """One llama.cpp thread: on a shared two-core machine a second one mostly waits."""
    return _make_app(**{"threads": 1, **options})


def _stored(title: str, pairs: list[tuple[str, str]], complete: bool = True) -> int:
    store = Store()
    conv = store.create(title)
    for user, reply in pairs:
        store.add_message(conv.id, "user", user)
        store.add_message(conv.id, "assistant", reply, complete=complete)
    store.close()
    return conv.id


def _ctx_label(app) -> str:
    return str(app.screen.query_one("#ctx", Label).render())


async def test_esc_in_the_first_run_picker_leaves_a_usable_chat(starter_path):
    app = make_app(start="auto")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, WizardScreen))
        await pilot.press("escape")
        await until(pilot, lambda: app.engine is not None and isinstance(app.screen, ChatScreen))
        box = app.screen.query_one("#input")
        assert box.has_focus and not box.waiting
        assert "is ready" in str(app.screen.query_one(".note").render())
    assert config.load().default_model == "", "Esc picks nothing: no default is saved"


async def test_picking_a_model_makes_it_the_default_so_the_picker_is_not_shown_again(
    starter_path,
):
    app = make_app(start="auto")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, WizardScreen))
        # The starter is marked and ranked on its merits, not first (issue 31 item 12).
        row = app.screen.rows.index("smollm2-135m-instruct:Q4_1")
        app.screen.query_one("#choices").move_cursor(row=row)
        await pilot.press("enter")
        await until(pilot, lambda: app.engine is not None)
    assert config.load().default_model == "smollm2-135m-instruct:Q4_1"
    again = make_app(start="auto")
    async with again.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: again.engine is not None)
        assert isinstance(again.screen, ChatScreen)
        assert not any(isinstance(s, WizardScreen) for s in again.screen_stack)


async def test_every_key_works_from_the_message_box(starter_path, tmp_path, monkeypatch):
    """Each advertised key is pressed with the message box focused, and does its job."""
    box_keys = {k for b in TextArea.BINDINGS for k in b.key.split(",")}
    for binding in ChatScreen.BINDINGS:
        assert binding.key not in box_keys, f"{binding.key} is the message box's own key"
    monkeypatch.chdir(tmp_path)
    first = _stored("Greetings", [("Say hi", "Hi there!")])
    second = _stored("Scripts", [("Print a and b", CODE_REPLY)])
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        screen = app.screen
        box = screen.query_one("#input")
        await until(pilot, lambda: box.has_focus, 5)
        assert screen.conversation.id == second

        async def press(key, dialog=None):
            assert app.screen is screen and box.has_focus, key
            await pilot.press(key)
            await pilot.pause()
            if dialog is not None:
                assert isinstance(app.screen, dialog), key

        await press("ctrl+t")
        assert app.clipboard == CODE_REPLY
        await press("f4", Pick)  # two code blocks: which one?
        await pilot.press("down", "enter")
        assert app.clipboard == "echo b\n"
        await press("ctrl+s", Ask)  # export: asks where, the current folder first
        assert app.screen.query_one("#answer").value == str(tmp_path / "scripts.md")
        await pilot.press("enter")
        await pilot.pause()
        assert (tmp_path / "scripts.md").read_text().startswith("# Scripts")
        await press("ctrl+f", Search)
        await pilot.press("escape")
        await press("ctrl+o", Settings)
        await pilot.press("escape")
        await press("f2", Ask)
        await pilot.press("escape")
        sidebar = screen.query_one("#sidebar")
        shown = sidebar.has_class("shown")
        await press("ctrl+b")
        assert sidebar.has_class("shown") != shown
        await press("f3")  # the last message back in the box, its reply gone
        assert box.text == "Print a and b" and app.store.messages(second) == []
        box.clear()
        await press("f8", Confirm)  # delete asks; Enter (the reflex) keeps it
        await pilot.press("enter")
        await pilot.pause()
        assert app.store.get(second) is not None
        await press("f8", Confirm)
        await pilot.click("#yes")
        await pilot.pause()
        assert app.store.get(second) is None and screen.conversation.id == first
        await press("ctrl+n")
        await press("ctrl+n")  # a second new chat reuses the empty one
        empty = [c for c in app.store.list() if not app.store.messages(c.id)]
        assert len(empty) == 1 and screen.conversation.id == empty[0].id
        await press("ctrl+p")
        assert app.screen is not screen
        await pilot.press("escape")


async def test_the_palette_runs_the_typed_match_on_a_quick_enter(starter_path):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        await pilot.press("ctrl+p", "c")
        await pilot.pause(0.6)  # the list for "c" is shown, "Choose a model" first
        box = app.screen.query_one(CommandInput)
        # The rest and Enter in one burst, as a terminal delivers fast typing: the Enter
        # comes before the search for the new text has finished.
        box.value = "Search chats"
        box.post_message(Input.Submitted(box, box.value))
        await until(pilot, lambda: isinstance(app.screen, Search), 10)
        assert not any(isinstance(s, WizardScreen) for s in app.screen_stack)


async def test_search_finds_words_in_any_conversation_and_opens_it(starter_path):
    trip = _stored("Trip", [("Where in May?", "Lisbon is lovely in May.")])
    _stored("Other", [("Hello", "Hi!")])
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        await pilot.press("ctrl+f", *"lisb")  # a word's start finds it
        await until(pilot, lambda: isinstance(app.screen, Search) and app.screen.hits)
        assert app.screen.hits[0].title == "Trip" and "[Lisbon]" in app.screen.hits[0].snippet
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen.conversation.id == trip


async def test_settings_dialog_fits_80x24_and_validates(starter_path):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        await pilot.press("ctrl+o")
        await pilot.pause()
        dialog = app.screen
        for button in dialog.query(Button):
            region = button.region
            assert region.bottom <= 24 and region.right <= 80 and region.height > 0, button
        assert dialog.query_one("#repeat_penalty").placeholder == "1.1"
        dialog.query_one("#top_p").value = "0"  # refused by the CLI, so here too (limits.py)
        await pilot.click("#ok")
        await pilot.pause()
        assert "top-p must be more than 0 and at most 1" in str(
            dialog.query_one("#settings-error").render()
        )
        dialog.query_one("#top_p").value = "0.9"
        dialog.query_one("#seed").value = "-1"
        dialog.query_one("#repeat_penalty").value = "1.2"
        dialog.query_one("#ok", Button).press()  # a toast in the corner can cover the button
        await until(pilot, lambda: app.screen is not dialog)  # dismissed, maybe after a frame
        assert app.screen.conversation.sampling == {
            "top_p": 0.9,
            "seed": 0xFFFFFFFF,
            "repeat_penalty": 1.2,
        }


async def test_the_kv_cache_type_is_chosen_in_the_app_and_kept(starter_path):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        first = app.engine
        app.choose_kv_cache()
        await pilot.pause()
        assert isinstance(app.screen, Pick)
        await pilot.press("down", "enter")  # q8_0
        await until(pilot, lambda: app.engine is not first and app.engine is not None)
        assert app.engine.plan.type_k == app.engine.plan.type_v == "q8_0"
    assert config.load().kv_cache == "q8_0"


async def test_replies_regenerate_continue_and_the_context_readout_follows(starter_path):
    config.set_value("temperature", "0")
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        screen = app.screen
        assert _ctx_label(app).startswith("ctx 0/")
        screen.conversation.sampling = {"max_tokens": 6}
        await pilot.press(*"Name two colours.", "ctrl+j", *"And a fruit.", "enter")
        await until(pilot, lambda: not screen.generating and screen._reply_id)
        conv = screen.conversation.id
        user, reply = app.store.messages(conv)
        assert user.content == "Name two colours.\nAnd a fruit."
        assert "\n" in str(screen.bubbles[user.id].render())  # the line break is kept
        assert not reply.complete  # cut at 6 tokens: marked, and continuable
        assert "Ctrl+G continues" in str(screen.query_one(".unfinished").render())
        used = int(_ctx_label(app).split()[1].split("/")[0])
        assert used > 20
        await pilot.press("ctrl+g")
        await until(pilot, lambda: not screen.generating)
        longer = app.store.messages(conv)[-1]
        assert longer.id == reply.id and longer.content.startswith(reply.content.rstrip())
        assert len(longer.content) > len(reply.content)
        before = app.engine.last_stats
        await pilot.press("ctrl+r")  # written again, from the same prompt
        await until(pilot, lambda: not screen.generating and app.engine.last_stats is not before)
        again = app.store.messages(conv)
        assert [m.role for m in again] == ["user", "assistant"]
        assert again[-1].content == reply.content  # greedy: the same words, not appended
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert _ctx_label(app).startswith("ctx 0/")  # a new chat is empty
        screen.open_conversation(conv)
        await pilot.pause()
        assert int(_ctx_label(app).split()[1].split("/")[0]) > 20  # reopened: counted
        await pilot.press(*"Hello there")
        await until(pilot, lambda: screen.query_one("#input").border_subtitle, 5)
        assert screen.query_one("#input").border_subtitle.endswith("tokens")


async def test_the_context_readout_moves_while_a_reply_streams(starter_path):
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        screen = app.screen
        screen.conversation.sampling = {  # a grammar keeps the reply going (test_tui.py)
            "max_tokens": 2000,
            "temperature": 0.8,
            "seed": 7,
            "grammar": "start: /[a-z ]{20000,}/",
        }
        await pilot.press(*"Write a very long story about the sea.", "enter")
        await until(pilot, lambda: screen.generating)
        seen = []
        while screen.generating and len(set(seen)) < 3:
            screen.refresh_readouts()
            seen.append(_ctx_label(app))
            await pilot.pause(0.1)
        assert len(set(seen)) >= 3, seen  # it moved while the reply was streaming
        await pilot.press("escape")
        await until(pilot, lambda: not screen.generating)


async def test_summarising_shows_a_progress_bar(starter_path, tmp_path):
    from edgechat.tasks.progress import STAGES

    doc = tmp_path / "minutes.md"
    doc.write_text("The council met on Tuesday and agreed the library budget.\n")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        screen = app.screen
        seen = []  # what the bar and its label showed at each progress report
        shown = screen._summary_progress

        def record(p) -> None:
            shown(p)
            bars = list(screen.query("#summary-bar").results(ProgressBar))
            stage = screen.query("#summary-stage")
            seen.append(
                (str(stage.first().render()) if stage else "", bars[0].total if bars else None)
            )

        screen._summary_progress = record  # the real update runs; this only looks after it
        screen._summarise(str(doc))
        await pilot.pause()
        await until(pilot, lambda: not screen.generating)
        # Each stage shown by name with its count (tasks/progress.py's one model).
        assert [line.split()[0] for line, _ in seen][-1] == "writing", seen
        assert all(line.split()[0] in STAGES for line, _ in seen), seen
        assert seen[-1][0] == "writing the summary · done", seen
        assert any(total is not None for _, total in seen), seen  # the bar had a total
        assert not screen.query("#summary-progress")
        assert app.store.messages(screen.conversation.id)[-1].role == "assistant"


async def test_a_base_model_is_named_and_refused_not_chatted_with(gemma_path):
    app = make_app(model=str(gemma_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        assert "is a base model" in str(app.screen.query_one(".note").render())
        await pilot.press(*"Hello", "enter")
        await pilot.pause()
        assert app.store.messages(app.screen.conversation.id) == []
        assert app.screen.query_one("#input").text == "Hello"  # nothing typed is lost
        assert any("base model" in n.message for n in app._notifications)


async def test_reopening_restores_the_kv_snapshot(starter_path):
    long_text = "The committee reviewed the harbour budget line by line. " * 25
    conv = _stored("Harbour", [(long_text, "Noted: the budget was reviewed.")])
    config.set_value("temperature", "0")
    config.set_value("max_tokens", "8")
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        assert app.screen.conversation.id == conv
        await pilot.press(*"Summarise that.", "enter")
        await until(pilot, lambda: app.screen._reply_id and not app.screen.generating)
        await until(pilot, lambda: (app.snapshots.folder / f"{conv}.kv").exists(), 30)
    again = make_app()
    async with again.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: again.last_restore is not None, 30)
        assert again.last_restore.why == "restored" and again.last_restore.tokens > 256
        t0 = time.monotonic()
        await pilot.press(*"Thanks.", "enter")
        await until(
            pilot, lambda: len(again.store.messages(conv)) == 6 and not again.screen.generating
        )
        stats = again.engine.last_stats
        assert stats.prompt_eval_tokens < 40 < stats.prompt_tokens, stats  # only what is new
        assert time.monotonic() > t0


# -- a real terminal ---------------------------------------------------------------------------


@pytest.mark.tmux
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_first_run_at_80x24_under_tmux(edgechat_home, starter_path, tmp_path):
    """Esc in the picker, a chat, export, search, then quit and reopen, in a real terminal."""
    run_main("config", "set", "temperature", "0")
    run_main("config", "set", "max_tokens", "40")
    session = f"edgechat-first-{time.monotonic_ns()}"
    cmd = (
        f"cd {tmp_path} && env EDGECHAT_HOME={edgechat_home} PYTHONPATH={REPO} "
        f"TERM=xterm-256color {sys.executable} -m edgechat"
    )

    def tmux(*args):
        subprocess.run(["tmux", *args], check=True, capture_output=True)

    def screen() -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True
        ).stdout

    def wait_for(text: str, seconds: float = 60) -> str:
        deadline = time.monotonic() + seconds
        while text not in (shown := screen()):
            assert time.monotonic() < deadline, f"{text!r} never came:\n{shown}"
            time.sleep(0.2)
        return shown

    def keys(*k):
        subprocess.run(["tmux", "send-keys", "-t", session, *k], check=True)

    tmux("new-session", "-d", "-s", session, "-x", "80", "-y", "24", cmd)
    try:
        wait_for("Esc chats with")  # the picker, on the first run, says what Esc does
        keys("Escape")
        shown = wait_for("is ready")
        assert "Loading the model" not in shown
        question = "What is the capital of France?"
        keys(question, "Enter")
        wait_for("tok/s")  # the reply has finished: its speed is shown
        keys("C-s")
        wait_for("Export this chat as Markdown to")
        keys("Enter")
        wait_for("exported to")
        exported = list(tmp_path.glob("*.md"))
        assert len(exported) == 1 and question in (text := exported[0].read_text())
        keys("C-n")
        wait_for("every command.")  # the whole greeting, wrapped, not cut at column 80
        keys("C-f")
        wait_for("Search all chats")
        keys("capital")
        wait_for("[capital]")
        keys("Enter")
        wait_for("— What is the capital")  # the chat opened (the results also show Paris)
        keys("C-q")
        deadline = time.monotonic() + 30
        while subprocess.run(["tmux", "has-session", "-t", session]).returncode == 0:
            assert time.monotonic() < deadline, screen()
            time.sleep(0.2)
        # Reopen: no picker this time, the same chat is back.
        tmux("new-session", "-d", "-s", session, "-x", "80", "-y", "24", cmd)
        shown = wait_for(question)
        assert "Esc chats with" not in shown
        store = Store()
        (chat,) = [c for c in store.list() if store.messages(c.id)]
        reply = store.messages(chat.id)[-1]
        store.close()
        assert reply.role == "assistant" and reply.content.strip() in text  # exported whole
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_snapshot_settings_dialog_at_80x24(snap_compare, starter_path):
    async def opened(pilot):
        await until(pilot, lambda: pilot.app.engine is not None)
        await pilot.pause(0.3)
        pilot.app.clear_notifications()  # "loaded in 0.4 s": a time, not the layout
        await pilot.pause()
        await pilot.press("ctrl+o")
        await pilot.pause()
        for area in pilot.app.screen.query(TextArea):
            hold_still(area)

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=opened)
