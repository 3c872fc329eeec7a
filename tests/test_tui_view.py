"""What the chat view shows (issue 31, items 4-6 and the app's parts of 14), on the tests'
FakeEngine: a reply followed to its last line at 80x24, the summary's bar in view, a
search hit opened at its message, the draft kept through Up and Down, a memory trend to
scale, the picker's rows under the right columns, a failed server that leaves the chat
as it was, and the picker saying what Esc does."""

from __future__ import annotations

import shutil

from support.app import FakeOpener, fake_app, until
from support.hostile_gguf import write_base
from textual.widgets import DataTable, Label

from edgechat import config
from edgechat.tasks.conversations import Store
from edgechat.tui.chat import ChatScreen
from edgechat.tui.wizard import FIT_BADGE, HEADINGS, ON_THIS_MACHINE, WizardScreen

# Replies of many kinds of Markdown block: lists, code, quotes and tables are laid out
# a frame or more after their text arrives, which is where the view used to stop short.
BLOCKS = [
    "Here is the plan, step by step, with the details that matter most.",
    "- first, the long item that wraps across the line at eighty columns wide\n- two",
    "```python\nfor i in range(3):\n    print(i)\n```",
    "> a quoted line that is long enough to wrap at eighty columns, twice over here",
    "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |",
    "## A heading",
    "1. one\n2. two\n3. three",
]
REPLY = "\n\n".join(BLOCKS + ["The last paragraph ends the reply: THE-LAST-LINE."])


def shapes(n: int) -> list[str]:
    """``n`` replies, each with the blocks in another order and number."""
    return [
        "\n\n".join(BLOCKS[i % 7 :] + BLOCKS[: i % 7] + BLOCKS[: i % 3] + ["The end."])
        for i in range(n)
    ]


def _in_view(screen, widget) -> bool:
    """All of ``widget`` lies inside the chat's visible area."""
    view = screen.query_one("#messages").content_region
    region = widget.region
    return region.height > 0 and view.y <= region.y and region.bottom <= view.bottom


def _stored(title: str, pairs: list[tuple[str, str]]) -> int:
    store = Store()
    conv = store.create(title)
    for user, reply in pairs:
        store.add_message(conv.id, "user", user)
        store.add_message(conv.id, "assistant", reply)
    store.close()
    return conv.id


# -- 4. the view follows a reply to its end ------------------------------------------------


async def test_a_streamed_reply_is_followed_to_its_last_line_at_80x24():
    replies = shapes(4)
    app = fake_app(FakeOpener(respond=lambda _: replies[len(app.store.list()) - 1], delay=0.003))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        screen = app.screen
        for n in range(len(replies)):  # each in a chat of its own
            await pilot.press("ctrl+n", *f"Question {n}?", "enter")
            await until(pilot, lambda: screen._reply_id and not screen.generating)
            await pilot.pause(0.3)
            messages = screen.query_one("#messages")
            bubble = screen.bubbles[screen._reply_id]
            assert messages.max_scroll_y > 0, n
            assert messages.scroll_y == messages.max_scroll_y, (n, messages.scroll_y)
            assert _in_view(screen, bubble.children[-1]), n  # its last line is on screen


async def test_a_short_chat_stays_at_the_top_of_the_view():
    app = fake_app(FakeOpener(respond="Hi!"))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        screen = app.screen
        await pilot.press(*"Hello", "enter")
        await until(pilot, lambda: screen._reply_id and not screen.generating)
        await pilot.pause(0.2)
        first = screen.query_one("#messages").children[0]
        assert first.region.y == screen.query_one("#messages").content_region.y


async def test_a_reader_who_scrolled_up_is_left_where_they_read():
    app = fake_app(FakeOpener(respond=REPLY * 3, delay=0.01))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        screen = app.screen
        await pilot.press(*"Tell me a lot.", "enter")
        messages = screen.query_one("#messages")
        await until(pilot, lambda: messages.max_scroll_y > 10)
        messages.scroll_to(y=0, animate=False)  # as the wheel or the scroll bar does
        await until(pilot, lambda: not screen.generating)
        await pilot.pause(0.3)
        assert messages.scroll_y == 0  # not pulled back to the end
        messages.scroll_end(animate=False)  # back at the end, the view follows again
        await pilot.press(*"More?", "enter")
        await until(pilot, lambda: not screen.generating)
        await pilot.pause(0.3)
        assert messages.scroll_y == messages.max_scroll_y


async def test_the_summarys_progress_bar_is_in_view(tmp_path):
    _stored("Long", [(f"Question {i}", REPLY) for i in range(3)])
    doc = tmp_path / "minutes.md"
    doc.write_text("The council met on Tuesday and agreed the library budget.\n" * 40)
    app = fake_app(FakeOpener(respond="A summary of it. " * 40, delay=0.1))  # a minute
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        screen = app.screen
        await pilot.pause(0.3)
        screen._summarise(str(doc))
        await until(pilot, lambda: screen.query("#summary-bar"))
        progress = screen.query_one("#summary-progress")
        await until(pilot, lambda: _in_view(screen, progress), 20)
        await pilot.press("escape")  # stopped: the test is done
        await until(pilot, lambda: not screen.generating, 60)


# -- 5. a search hit opens at its message ----------------------------------------------------


async def test_a_search_hit_opens_at_the_matching_message_and_marks_it():
    pairs = [(f"Question {i}", REPLY) for i in range(8)]
    pairs[2] = ("Where in May?", REPLY + "\n\nIn May, **Lisbon** is lovely.\n\n" + REPLY)
    trip = _stored("Trip", pairs)
    _stored("Other", [("Hello", "Hi!")])
    app = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        screen = app.screen
        await pilot.press("ctrl+f", *"lisbon")
        await until(pilot, lambda: getattr(app.screen, "hits", None))
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is screen and screen.conversation.id == trip)
        hit = next(m for m in app.store.messages(trip) if "Lisbon" in m.content)
        bubble = screen.bubbles[hit.id]
        await until(pilot, lambda: bubble.has_class("hit"), 5)
        await pilot.pause(0.3)
        messages = screen.query_one("#messages")
        assert messages.scroll_y < messages.max_scroll_y  # not at the end of the chat
        (block,) = [b for b in bubble.children if "Lisbon" in str(b._content)]
        assert block.region.y == messages.content_region.y  # the match, atop the view
        assert [b for b in screen.query(".hit")] == [bubble]  # the one marked
        await pilot.press(*"Thanks", "enter")  # a new message: the mark goes
        await until(pilot, lambda: not screen.query(".hit"))


# -- 6. Up and Down never lose the draft -----------------------------------------------------


async def test_up_and_down_walk_history_and_bring_the_draft_back():
    app = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        screen = app.screen
        box = screen.query_one("#input")
        for words in ("first", "second"):
            await pilot.press(*words, "enter")
            await until(pilot, lambda: not screen.generating)
        await pilot.press(*"half-written")
        await pilot.press("up")
        assert box.text == "second"
        await pilot.press("up")
        assert box.text == "first"
        await pilot.press("up")  # the oldest stays
        assert box.text == "first"
        await pilot.press("down")
        assert box.text == "second"
        await pilot.press("down")  # past the newest: the draft, as it was
        assert box.text == "half-written"
        await pilot.press("up", *" again")  # an entry changed is the draft from then on
        assert box.text == "second again"
        await pilot.press("up", "down", "down")
        assert box.text == "second again"
        await pilot.press("enter")
        await until(pilot, lambda: not screen.generating)
        await pilot.press("up")
        assert box.text == "second again"
        await pilot.press("down")
        assert box.text == ""  # sent: no draft left to bring back
        await pilot.press(*"unsent", "f3")  # editing the last message would replace it
        await pilot.pause()
        assert box.text == "unsent" and len(app.store.messages(screen.conversation.id)) == 6


# -- 14. the readouts and the picker --------------------------------------------------------


def test_the_rss_trend_scales_to_a_real_change():
    from edgechat.tui.widgets import TREND_FLOOR_MIB, trend

    assert trend([300.0] * 29 + [301.0], 8, TREND_FLOOR_MIB) == "▁" * 8  # a 1 MiB wobble
    assert trend([100.0] * 15 + [400.0] * 15, 8, TREND_FLOOR_MIB) == "▁▁▁▁████"  # a load
    half = trend([300.0] * 29 + [300.0 + TREND_FLOOR_MIB / 2], 8, TREND_FLOOR_MIB)
    assert half[:-1] == "▁" * 7 and half[-1] in "▄▅"


async def test_the_rss_readout_does_not_leap_at_a_megabyte():
    from dataclasses import replace

    from support.app import READOUT

    from edgechat.tui.app import EdgechatApp, LaunchOptions

    samples = iter(range(10_000))

    def wobbling():  # the app's memory, 0 or 1 MiB above its level, every second
        return replace(READOUT, rss=READOUT.rss + (next(samples) % 2) * 2**20)

    app = EdgechatApp(LaunchOptions(start="chat"), sample_readouts=wobbling, opener=FakeOpener())
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        for _ in range(4):
            app.screen.refresh_readouts()
        shown = str(app.screen.query_one("#rss-spark", Label).render())
        assert set(shown) == {"▁"}, shown


async def test_models_on_this_machine_sit_under_the_right_columns(tmp_path, monkeypatch):
    cache = tmp_path / "llama-cache"
    cache.mkdir()
    write_base(tmp_path)
    name = "bartowski_SmolLM2-135M-Instruct-GGUF_SmolLM2-135M-Instruct-Q4_1.gguf"  # as named
    shutil.copy(tmp_path / "tiny-valid.gguf", cache / name)
    monkeypatch.setenv("LLAMA_CACHE", str(cache))
    app = fake_app(start="auto")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, WizardScreen) and app.screen.rows)
        wizard = app.screen
        await until(pilot, lambda: len(wizard.rows) > 3)  # the ranking too
        table = wizard.query_one(DataTable)
        assert wizard.rows[0] == ON_THIS_MACHINE
        assert wizard.rows[table.cursor_row] not in HEADINGS  # the cursor is on a model
        row = wizard.rows.index(f"llamacpp:{name}")
        label, ram, vram, speed, fit, mark = table.get_row_at(row)
        fits = dict(app.choices.machine_fits("chat"))
        choice = next(c for f, c in fits.items() if f.name == name)
        assert str(label).endswith("Q4_1.gguf · llama.cpp")  # the tool beside the name
        await pilot.pause()
        assert table.virtual_size.width <= table.size.width  # every column on screen
        assert fit in FIT_BADGE.values() and mark == "○"
        assert ram not in ("", "llama.cpp") and "MiB" in ram or "GiB" in ram
        from edgechat.facts.device import format_size

        assert ram == format_size(choice.estimate.ram_needed)  # what it needs, not its size


async def test_a_server_that_cannot_be_reached_leaves_the_chat_as_it_was():
    opener = FakeOpener(unreachable=("nowhere:8080",))
    app = fake_app(opener, model="local-model")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        local = app.engine
        app.ask_remote()
        await pilot.pause()
        app.screen.query_one("#answer").value = "http://nowhere:8080/v1"
        await pilot.press("enter")
        await until(pilot, lambda: any("cannot reach" in n.message for n in app._notifications))
        await until(pilot, lambda: not app.model_state.loading)
        await pilot.pause(0.2)
        assert isinstance(app.screen, ChatScreen)  # no picker for a stray Enter to pick in
        assert not any(isinstance(s, WizardScreen) for s in app.screen_stack)
        assert app.engine is local
        await pilot.press("enter")
    assert config.load().default_model == ""


async def test_a_server_that_cannot_be_reached_leaves_the_model_that_was_loading():
    """A newcomer asks for a server while the first model still loads: the server fails,
    and the model that was loading is there to chat with (only the newest load used to
    be kept: the model was dropped, and nothing was left)."""
    import threading

    opener = FakeOpener(unreachable=("nowhere:8080",))
    opener.hold["local-model"] = threading.Event()
    app = fake_app(opener, model="local-model")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.model_state.loading)
        app.use_remote("http://nowhere:8080/v1")
        opener.hold["local-model"].set()
        await until(pilot, lambda: any("cannot reach" in n.message for n in app._notifications))
        await until(pilot, lambda: not app.model_state.loading)
        assert app.engine is not None and app.engine.is_local
        assert isinstance(app.screen, ChatScreen) and not app.screen.query_one("#input").waiting


async def test_the_first_run_picker_says_what_esc_does():
    from edgechat.models import registry

    opener = FakeOpener()
    app = fake_app(opener, start="auto")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, WizardScreen) and app.screen.rows)
        help_line = str(app.screen.query_one("#wizard-help", Label).render())
        starter = registry.resolve(None, "")
        label = next(k for k, p in registry.installed().items() if p == starter)
        assert f"Esc chats with {label}" in help_line, help_line
        await pilot.press("escape")
        await until(pilot, lambda: app.engine is not None and isinstance(app.screen, ChatScreen))
        assert opener.requests[-1].model is None  # the default: the one named
        app.open_wizard()  # with a model in use, Esc goes back to it
        await until(pilot, lambda: isinstance(app.screen, WizardScreen) and app.screen.rows)
        help_line = str(app.screen.query_one("#wizard-help", Label).render())
        assert "Esc goes back to the chat" in help_line
