"""`chat --remote` in the app (issue 31, item 3): a chat written on this machine is never
sent to a server unasked, and where the text goes is said before the first message,
every time. On the tests' FakeEngine: the subject is what the app sends where, not what
a server answers (tests/test_remote.py drives real servers)."""

from __future__ import annotations

from support.app import FakeOpener, fake_app, hold_still, until
from textual.widgets import Label, OptionList

from edgechat.tasks.conversations import Store
from edgechat.tui.chat import ChatScreen
from edgechat.tui.dialogs import Pick

SERVER = "http://fake-host:8080/v1"


def _local_chat() -> int:
    """A chat written with a model on this machine, the newest one."""
    store = Store()
    conv = store.create("Private notes")
    store.add_message(conv.id, "user", "My bank PIN is 4321, remember it.")
    store.add_message(conv.id, "assistant", "Noted.")
    store.close()
    return conv.id


def _sent(opener: FakeOpener) -> list[str]:
    """Every message any server was sent (the system prompt is a setting, not a chat)."""
    remote = [e for e in opener.opened if not e.is_local]
    return [
        m["content"] for e in remote for asked in e.requests for m in asked if m["role"] != "system"
    ]


def _where_said(screen) -> str:
    """What the chat says of where the text goes: the greeting or the line after the
    chat, and the title above the box."""
    lines = [str(w.render()) for w in screen.query(".note, .where").results(Label)]
    return " ".join(lines) + " | " + str(screen.query_one("#input").border_title or "")


async def test_a_remote_session_starts_its_own_chat_and_says_where_text_goes():
    private = _local_chat()
    opener = FakeOpener(respond="Hello from the server.")
    app = fake_app(opener, remote=SERVER)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None and not app.engine.is_local)
        screen = app.screen
        await until(pilot, lambda: screen.conversation.id != private)
        assert app.store.messages(screen.conversation.id) == []  # a chat of its own
        said = _where_said(screen)
        assert "sent there" in said and "sent to fake-host:8080" in said  # before anything
        await pilot.press(*"Hi", "enter")
        await until(pilot, lambda: screen._reply_id and not screen.generating)
        assert _sent(opener) == ["Hi"]  # the local chat stayed here
        assert app.store.get(screen.conversation.id).sent_to == "fake-host:8080"
        assert "sent to fake-host:8080" in _where_said(screen)  # still said, above the box


async def test_a_local_chat_opened_in_a_remote_session_asks_before_it_is_sent():
    private = _local_chat()
    opener = FakeOpener(respond="Server reply.")
    app = fake_app(opener, remote=SERVER)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None and not app.engine.is_local)
        screen = app.screen
        await until(pilot, lambda: screen.conversation.id != private)
        screen.open_conversation(private)  # from the list of chats
        await pilot.pause()
        assert "is sent to fake-host:8080" in _where_said(screen)  # said in a chat not empty
        box = screen.query_one("#input")

        async def send(words: str) -> Pick:
            await pilot.press(*words, "enter")
            await until(pilot, lambda: isinstance(app.screen, Pick))
            return app.screen

        question = await send("What is my PIN?")
        choices = question.query_one(OptionList)
        assert choices.region.height == choices.option_count + 2  # no empty rows below
        await pilot.press("escape")  # send nothing: the words stay in the box
        await until(pilot, lambda: app.screen is screen)
        assert box.text == "What is my PIN?" and _sent(opener) == []
        assert len(app.store.messages(private)) == 2

        box.clear()
        await send("Only this one.")
        await pilot.press("enter")  # the first choice: a new chat with this message alone
        await until(pilot, lambda: screen.conversation.id != private and not screen.generating)
        await until(pilot, lambda: screen._reply_id and not screen.generating)
        assert _sent(opener) == ["Only this one."]
        assert len(app.store.messages(private)) == 2 and box.text == ""

        screen.open_conversation(private)
        await pilot.pause()
        await send("Send it all.")
        await pilot.press("down", "enter")  # agreed: the whole chat goes
        await until(pilot, lambda: len(app.store.messages(private)) == 4)
        await until(pilot, lambda: not screen.generating)
        assert "My bank PIN is 4321, remember it." in _sent(opener)
        assert app.store.get(private).sent_to == "fake-host:8080"
        await pilot.press(*"And again?", "enter")  # all of it went there already: no question
        await until(pilot, lambda: len(app.store.messages(private)) == 6)
        assert not isinstance(app.screen, Pick)


async def test_a_server_chosen_mid_chat_gets_a_new_chat_and_regenerate_asks_nothing_unasked():
    opener = FakeOpener(respond="Local reply.")
    app = fake_app(opener, model="local-model")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        screen = app.screen
        await pilot.press(*"A secret, written here.", "enter")
        await until(pilot, lambda: screen._reply_id and not screen.generating)
        local = screen.conversation.id
        app.use_remote(SERVER)  # Ctrl+P → Use a remote server
        await until(pilot, lambda: app.engine is not None and not app.engine.is_local)
        await until(pilot, lambda: screen.conversation.id != local)
        await until(pilot, lambda: any("not sent there" in n.message for n in app._notifications))
        screen.open_conversation(local)
        await pilot.pause()
        await pilot.press("ctrl+r")  # writing the reply again would send the chat: refused
        said = "not written with fake-host:8080"
        await until(pilot, lambda: any(said in n.message for n in app._notifications))
        assert _sent(opener) == [] and not screen.generating
    again = fake_app(FakeOpener(), remote=SERVER)  # relaunched: still not sent unasked
    async with again.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: again.engine is not None and not again.engine.is_local)
        await until(pilot, lambda: isinstance(again.screen, ChatScreen))
        await until(pilot, lambda: again.screen.conversation.id != local)


def test_snapshot_the_question_before_a_local_chat_goes_to_a_server(snap_compare):
    _local_chat()

    async def asked(pilot) -> None:
        app = pilot.app
        await until(pilot, lambda: app.engine is not None and not app.engine.is_local)
        screen = app.screen
        await until(pilot, lambda: screen.conversation.id != 1)
        screen.open_conversation(1)
        await until(pilot, lambda: any("new chat" in n.message for n in app._notifications))
        await pilot.pause(0.3)
        app.clear_notifications()  # a load's time is not the layout
        hold_still(screen.query_one("#input"))
        await pilot.pause(0.3)
        await pilot.press(*"What is my PIN?", "enter")
        await until(pilot, lambda: isinstance(app.screen, Pick))
        await pilot.pause(0.3)

    assert snap_compare(fake_app(remote=SERVER), terminal_size=(80, 24), run_before=asked)
