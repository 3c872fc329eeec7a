"""The app's model session (tui/session.py) and the screens that follow it, on the tests'
FakeEngine: the subject is who owns, replaces and closes engines, on which thread, and
what the screens are told, not what a model writes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from support.fake_engine import FakeEngine

from edgechat.errors import EdgechatError
from edgechat.facts.readouts import Readout
from edgechat.llama.state import Snapshots
from edgechat.planning.plan import Sampling
from edgechat.service import Loaded, ModelRequest
from edgechat.tui.session import (
    ModelFailed,
    ModelLoaded,
    ModelLoading,
    ModelSession,
    ModelWarning,
)
from edgechat.tui.widgets import Finished, Token

GiB = 2**30
READOUT = Readout(rss=210 * 2**20, ram_used=6 * GiB, ram_available=10 * GiB, ram_total=16 * GiB)


class Recorded(FakeEngine):
    """A FakeEngine that notes the thread it was made, cancelled and closed on."""

    def __init__(self, label: str, **kwargs) -> None:
        super().__init__(n_ctx=4096, **kwargs)
        self.label = label
        self.made_on = threading.current_thread().name
        self.cancelled = False
        self.closed_on: str | None = None

    def cancel(self) -> None:
        self.cancelled = True
        super().cancel()

    def close(self) -> None:
        self.closed_on = threading.current_thread().name
        super().close()


class Opener:
    """Opens a ``Recorded`` engine named after the request's model, on the llama thread
    (through ``run``, as the real load is), or a server's when the request names one
    (no llama thread: a connection); ``hold`` keeps a named load waiting."""

    def __init__(self, **engine_options) -> None:
        self.opened: list[Recorded] = []
        self.requests: list[ModelRequest] = []
        self.hold: dict[str, threading.Event] = {}
        self.fail: dict[str, str] = {}
        self.engine_options = engine_options

    def __call__(self, request: ModelRequest, *, say, device, run) -> Loaded:
        self.requests.append(request)
        name = request.model or "default"
        if name in self.hold:
            assert self.hold[name].wait(30)
        if name in self.fail:
            raise EdgechatError(self.fail[name])
        if request.remote:
            engine = Recorded(name, is_local=False, where="fake-host", **self.engine_options)
        else:
            engine = run(lambda: Recorded(name, **self.engine_options))
        say(f"{name} was loaded anyway")
        self.opened.append(engine)
        return Loaded(engine, None, None, (), name)


def session_for(opener: Opener, tmp_path: Path) -> tuple[ModelSession, list]:
    """A session outside any app: its messages land in a list, its state changes run
    at once on the thread that makes them."""
    posted: list = []

    def soon(fn, *args) -> bool:
        fn(*args)
        return True

    session = ModelSession(
        None,
        Snapshots(tmp_path / "kv"),
        post=posted.append,
        soon=soon,
        opener=opener,
        sample_readouts=lambda: READOUT,
    )
    return session, posted


def settle(session: ModelSession) -> None:
    """Wait for what is queued on the llama thread (the closes)."""
    session.run(lambda: None).result(timeout=30)


def test_loads_replace_and_close_engines_on_the_llama_thread(tmp_path):
    opener = Opener()
    session, posted = session_for(opener, tmp_path)
    session.load(ModelRequest(model="first")).result(timeout=30)
    first = session.engine
    assert first.label == "first" and first.made_on.startswith("llama")
    assert [type(m) for m in posted] == [ModelLoading, ModelLoaded]
    assert posted[0].state.loading and not posted[1].state.loading
    assert posted[1].state.label == session.label == "first"
    assert posted[1].warnings == ("first was loaded anyway",) and not posted[1].remember

    session.load(ModelRequest(model="second"), remember=True).result(timeout=30)
    settle(session)
    assert session.label == "second" and posted[-1].remember
    assert first.cancelled and first.closed_on.startswith("llama")  # its reply stopped, freed
    second = session.engine
    assert second.closed_on is None
    session.close()
    session.llama.shutdown(wait=True)
    assert second.closed_on.startswith("llama") and session.engine is None


def test_only_the_newest_load_is_kept(tmp_path):
    opener = Opener()
    opener.hold["slow"] = threading.Event()
    session, posted = session_for(opener, tmp_path)
    slow = session.load(ModelRequest(model="slow"))
    fast = session.load(ModelRequest(model="fast"))  # asked for while "slow" still loads
    opener.hold["slow"].set()
    slow.result(timeout=30)
    fast.result(timeout=30)
    settle(session)
    assert session.label == "fast"
    outdated = next(e for e in opener.opened if e.label == "slow")
    assert outdated.closed_on.startswith("llama") and outdated is not session.engine
    loaded = [m.state.label for m in posted if isinstance(m, ModelLoaded)]
    assert loaded == ["fast"]  # the outdated one was never announced
    session.close()


def test_a_failed_load_keeps_the_model_in_use_and_says_why(tmp_path):
    opener = Opener()
    opener.fail["broken"] = "broken.gguf is damaged; pull it again"
    session, posted = session_for(opener, tmp_path)
    session.load(ModelRequest(model="good")).result(timeout=30)
    good = session.engine
    session.load(ModelRequest(model="broken")).result(timeout=30)
    assert isinstance(posted[-1], ModelFailed) and posted[-1].why.startswith("broken.gguf")
    state = session.state
    assert state.engine is good and not state.loading and state.error == posted[-1].why
    assert good.closed_on is None
    session.close()


def test_a_model_that_replaces_the_one_replying_stops_the_reply(tmp_path):
    """A local load waits on the llama thread behind the reply; a server's connection
    does not, so it lands mid-reply: that reply stops, then its engine is closed."""
    opener = Opener(respond="word " * 400, delay=0.01)
    session, posted = session_for(opener, tmp_path)
    session.load(ModelRequest(model="first")).result(timeout=30)
    first = session.engine
    said: list = []
    chat = [{"role": "user", "content": "Write a lot."}]
    reply = session.reply(1, chat, None, Sampling(max_tokens=400), said.append)
    deadline = time.monotonic() + 30
    while not any(isinstance(m, Token) for m in said):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    session.load(ModelRequest(model="second", remote="http://fake-host/v1")).result(timeout=30)
    reply.result(timeout=30)
    settle(session)
    end = said[-1]
    assert isinstance(end, Finished) and end.stats.finish == "cancelled"
    assert end.stats.gen_tokens < 400 and first.closed_on.startswith("llama")
    assert first.requests == [chat]  # the reply went to the engine in use then
    assert not [m for m in posted if isinstance(m, ModelWarning)]  # no snapshot: a fake has no KV
    session.close()


# -- the app and its screens, following the session ---------------------------------------


def fake_app(opener: Opener, **options):
    from edgechat.tui.app import EdgechatApp, LaunchOptions

    options = {"start": "chat", "memory": "16G", **options}
    return EdgechatApp(LaunchOptions(**options), sample_readouts=lambda: READOUT, opener=opener)


async def until(pilot, condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await pilot.pause(0.05)


def note(app) -> str:
    return str(app.screen.query_one(".note").render())


async def test_the_chat_screen_follows_what_the_session_says():
    from edgechat.tui.chat import TYPED_SETTLE_S, ChatScreen

    opener = Opener(respond="Hello from the fake.")
    opener.hold["fake-model"] = threading.Event()
    app = fake_app(opener, model="fake-model")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ChatScreen) and app.screen.query(".note"))
        box = app.screen.query_one("#input")
        await until(pilot, lambda: box.waiting and note(app) == "Loading the model ...")
        # Typed while the model loads (a first load checks the CPU kernels: seconds), the
        # text stays in the box, and Enter keeps it there until the model is ready.
        await pilot.press(*"Hi", "enter")
        await pilot.pause(TYPED_SETTLE_S + 0.2)  # the token count waits for a pause in typing
        assert box.text == "Hi" and "loading the model" in box.border_subtitle
        assert any("still loading" in n.message for n in app._notifications)
        opener.hold["fake-model"].set()  # ModelLoaded: the greeting, the box, the title follow
        await until(pilot, lambda: "fake-model is ready" in note(app))
        assert not box.waiting and app.title == "edgechat · fake-model"
        await until(pilot, lambda: box.has_focus, 5)  # back to the box, to type at once
        assert any("fake-model was loaded anyway" in n.message for n in app._notifications)
        assert box.text == "Hi" and box.border_subtitle.endswith(("token", "tokens"))
        await pilot.press("enter")
        screen = app.screen
        await until(pilot, lambda: screen._reply_id and not screen.generating)
        user, reply = app.store.messages(screen.conversation.id)
        assert reply.content == "Hello from the fake." and reply.model == "fake-model"
        assert opener.opened[0].requests[-1][-1] == {"role": "user", "content": "Hi"}


async def test_a_failed_load_is_said_in_the_chat_and_opens_the_picker():
    from edgechat.tui.wizard import WizardScreen

    opener = Opener()
    opener.fail["missing"] = "no model 'missing' is installed"
    app = fake_app(opener, model="missing")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, WizardScreen))
        assert app.engine is None
        chat = app.screen_stack[-2]
        said = "No model is loaded (no model 'missing' is installed)."
        await until(pilot, lambda: str(chat.query_one(".note").render()).startswith(said))
        await until(pilot, lambda: any("'missing'" in n.message for n in app._notifications))


async def test_a_new_kv_cache_type_reloads_and_closes_the_old_engine():
    from edgechat import config
    from edgechat.tui.dialogs import Pick

    opener = Opener()
    app = fake_app(opener, model="fake-model")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        first = app.engine
        await pilot.press("ctrl+p", *"KV cache type", "enter")
        await until(pilot, lambda: isinstance(app.screen, Pick), 10)
        await pilot.press("down", "enter")  # q8_0
        await until(pilot, lambda: app.engine is not first and app.engine is not None)
        await until(pilot, lambda: first.closed_on is not None)
        assert first.cancelled and first.closed_on.startswith("llama")
        assert config.load().kv_cache == "q8_0"
    first_load, reload = opener.requests
    assert first_load.type_k == "f16" and reload.type_k == reload.type_v == "q8_0"
    assert reload.model == "fake-model"


async def test_the_app_shows_a_summarys_progress_in_the_clis_words(tmp_path):
    """Issue 23, item 7: the app's label is the CLI's line, its bar has a total (never a
    spinner beside a different ETA), and a long summary is announced once, with its
    estimate. The fake engine runs at 10 / 2 tokens a second, so this document would take
    well over ten minutes."""
    from support.summary_docs import items_covered, numbered_report
    from textual.widgets import Label, ProgressBar

    from edgechat.tasks.progress import STAGES

    doc = tmp_path / "report.txt"
    doc.write_text("\n\n".join(numbered_report(400)))
    opener = Opener(respond=items_covered, speed=(10, 2))
    app = fake_app(opener, model="fake-model")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        screen = app.screen
        seen = []
        shown = screen._summary_progress

        def record(p) -> None:
            shown(p)
            bar = screen.query_one("#summary-bar", ProgressBar)
            label = str(screen.query_one("#summary-stage", Label).render())
            seen.append((p, label, bar.total))

        screen._summary_progress = record
        screen._summarise(str(doc))
        await pilot.pause()
        await until(pilot, lambda: not screen.generating, 60)
        warnings = [n.message for n in app._notifications if "this summary will take" in n.message]
        answer = app.store.messages(screen.conversation.id)[-1].content
    assert seen[0][0].stage == "reading" and {p.stage for p, *_ in seen} == set(STAGES)
    assert all(label == p.line() for p, label, _ in seen)  # the CLI's words, as they are
    assert all(total == 100 for *_, total in seen)
    assert len(warnings) == 1 and warnings[0].endswith("; Esc stops it")
    assert "Items 0-" in answer and "-399" in answer


async def test_the_app_marks_a_summary_the_check_took_sentences_out_of(tmp_path):
    """Issue 33: a summary whose model invented a number, a name and a quote shows the
    true quote and none of them, and says in the chat what the check took out."""
    from support.summary_docs import COUNCIL, INVENTED, TRUE_QUOTE, inventing

    doc = tmp_path / "council.txt"
    doc.write_text(COUNCIL)
    app = fake_app(Opener(respond=inventing), model="fake-model")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        screen = app.screen
        screen._summarise(str(doc))
        await pilot.pause()
        await until(pilot, lambda: not screen.generating, 60)
        answer = app.store.messages(screen.conversation.id)[-1].content
        told = [n.message for n in app._notifications if "dropped" in n.message]
    assert TRUE_QUOTE in answer and not [x for x in INVENTED if x in answer], answer
    said = "1 sentence rewritten and 2 dropped: they quoted, stated or named what the document"
    assert answer.endswith(f"_⚠ checked against the document: {said} does not say_")
    assert told == [f"{said} does not say"]
