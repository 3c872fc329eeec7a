"""The remote engine against two real OpenAI-compatible servers on loopback: `edgechat
serve`, and llama-cpp-python's own `python -m llama_cpp.server` (nobody here wrote it)."""

from __future__ import annotations

import sys

import pytest
from support.serving import edgechat_serve, llama_cpp_server

from edgechat import cli
from edgechat.errors import ContextOverflow, EdgechatError
from edgechat.planning.plan import Sampling

pytest.importorskip("openai")
pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is not installed")

pytestmark = pytest.mark.subprocess  # the servers run in child processes

SHORT = Sampling(temperature=0.0, max_tokens=12)


@pytest.fixture(scope="module")
def ours(starter_path, new_home):
    home = new_home("remote-home")
    srv = edgechat_serve(
        starter_path, "--ctx", "1024", "--threads", "1", "--quiet", env={"EDGECHAT_HOME": str(home)}
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def theirs(starter_path):
    srv = llama_cpp_server(starter_path, n_ctx=1024)
    yield srv
    srv.stop()


@pytest.fixture(params=["ours", "theirs"])
def server(request):
    return request.getfixturevalue(request.param)


def test_remote_engine_streams_a_reply_with_stats(server):
    from edgechat.llama.contract import ChatEngine
    from edgechat.llama.remote import RemoteEngine

    with RemoteEngine(server.url) as engine:
        assert engine.model in engine.models and engine.info()["remote"] is True
        assert isinstance(engine, ChatEngine) and not engine.is_local  # the one contract
        messages = [{"role": "user", "content": "Name three colours."}]
        reply = engine.chat(messages, SHORT)
        pieces = list(reply)
        assert len(pieces) > 1 and reply.text == "".join(pieces) and reply.text.strip()
        stats = reply.stats
        assert stats is engine.last_stats and stats.finish in ("stop", "length")
        assert 0 < stats.gen_tokens <= 12 and stats.prompt_tokens > 0 and stats.ttft_s > 0


def test_leaving_a_remote_reply_early_closes_it(server):
    from edgechat.llama.remote import RemoteEngine

    with RemoteEngine(server.url) as engine:
        reply = engine.chat(
            [{"role": "user", "content": "Count from one to a hundred in words."}],
            Sampling(temperature=0.0, max_tokens=400),
        )
        for i, _ in enumerate(reply):
            if i == 2:
                break
        assert reply.stats.finish == "cancelled" and reply.stats.gen_tokens < 400
        again = engine.chat([{"role": "user", "content": "Hi"}], SHORT).collect()
        assert again.strip()  # the server is free for the next one


def test_remote_completion_of_raw_text(server):
    from edgechat.llama.remote import RemoteEngine

    with RemoteEngine(server.url) as engine:
        engine.clear_cache()  # the server's own business: nothing to do, nothing fails
        reply = engine.complete("1, 2, 3, 4,", Sampling(temperature=0.0, max_tokens=8))
        text = reply.collect()
        assert text.strip() and reply.stats.finish == "length"
        assert reply.stats.gen_tokens == 8


def test_remote_context_limits(ours):
    from edgechat.llama.remote import RemoteEngine

    with RemoteEngine(ours.url) as engine:
        assert engine.n_ctx == 1024 and engine.n_ctx_known  # edgechat serve says so
        long = [{"role": "user", "content": "word " * 3000}]
        with pytest.raises(ContextOverflow):
            engine.chat(long, SHORT, drop_oldest=False)
        history = [
            {"role": "user", "content": "tell me " * 500},
            {"role": "assistant", "content": "ok " * 40},
            {"role": "user", "content": "Say hi."},
        ]
        reply = engine.chat(history, SHORT)
        assert reply.dropped >= 1 and reply.collect().strip()


def test_a_bare_address_that_speaks_ollama_is_spoken_to_in_ollamas_api(ours, theirs):
    from edgechat.llama.contract import ChatEngine
    from edgechat.llama.remote import RemoteEngine, open_remote
    from edgechat.llama.remote_ollama import OllamaEngine

    bare = ours.url.removesuffix("/v1")  # edgechat serve answers Ollama's API there too
    with open_remote(bare) as engine:
        assert isinstance(engine, OllamaEngine) and isinstance(engine, ChatEngine)
        assert engine.info()["api"] == "ollama" and not engine.is_local
        assert engine.n_ctx == 1024 and engine.n_ctx_known  # from /api/show's num_ctx
        turns = [{"role": "user", "content": "Name three colours."}]
        reply = engine.chat(turns, SHORT)
        assert reply.collect().strip() and 0 < reply.stats.gen_tokens <= 12
        turns += [{"role": "assistant", "content": reply.text}, {"role": "user", "content": "More"}]
        again = engine.chat(turns, SHORT)
        again.collect()
        assert again.stats.prompt_eval_tokens < again.stats.prompt_tokens  # the server's cache
        raw = engine.complete("1, 2, 3, 4,", Sampling(temperature=0.0, max_tokens=8))
        assert raw.collect().strip().startswith("5") and raw.stats.finish == "length"
    with open_remote(ours.url) as engine:  # /v1 named: OpenAI's API
        assert type(engine) is RemoteEngine
    with open_remote(theirs.url.removesuffix("/v1")) as engine:  # no /api/version there
        assert type(engine) is RemoteEngine and engine.url == theirs.url


def test_plain_chat_through_each_server(server, capsys):
    rc = cli.main(
        ["chat", "--plain", "--remote", server.url, "--max-tokens", "12", "Name three colours."]
    )
    captured = capsys.readouterr()
    assert rc == 0 and captured.out.strip()
    host = server.url.split("//")[1].split("/")[0]
    assert f"your text is sent to {host}" in captured.err


def test_plain_chat_says_where_the_text_goes_before_sending(theirs, monkeypatch, capsys):
    class Lines:
        """Standard input that checks, as the first message is read, what was said."""

        def __init__(self) -> None:
            self.lines = ["Hello\n", "/stats\n"]
            self.notice_first = None

        def isatty(self) -> bool:
            return False

        def readline(self) -> str:
            if self.notice_first is None:
                self.notice_first = "your text is sent to" in capsys.readouterr().err
            return self.lines.pop(0) if self.lines else ""

    stdin = Lines()
    monkeypatch.setattr(sys, "stdin", stdin)
    assert cli.main(["chat", "--plain", "--remote", theirs.url, "--max-tokens", "8"]) == 0
    assert stdin.notice_first is True
    captured = capsys.readouterr()
    assert captured.out.strip()
    assert "remote model at 127.0.0.1" in captured.err and "reply" in captured.err


def test_summarise_through_llama_cpp_server(theirs, tmp_path, capsys):
    doc = tmp_path / "notes.txt"
    doc.write_text("The meeting moved to Friday. Bring the budget figures and the new plan.\n")
    assert cli.main(["summarise", "--remote", theirs.url, "--length", "short", str(doc)]) == 0
    assert capsys.readouterr().out.strip()


def test_remote_failures_are_one_line(ours, capsys):
    from support.serving import free_port

    nowhere = f"http://127.0.0.1:{free_port()}/v1"
    assert cli.main(["chat", "--remote", nowhere, "--plain", "hi"]) == 1
    assert "cannot reach" in capsys.readouterr().err
    assert cli.main(["chat", "--remote", ours.url, "--remote-model", "nope", "hi"]) == 1
    err = capsys.readouterr().err
    assert "no model 'nope'" in err and err.count("\n") == 1
    bare = ours.url.removesuffix("/v1")
    assert cli.main(["chat", "--remote", bare, "--remote-model", "nope", "hi"]) == 1
    err = capsys.readouterr().err
    assert "no model 'nope'" in err and err.count("\n") == 1
    with pytest.raises(EdgechatError):
        from edgechat.llama.remote import base_url

        base_url("ftp://x")


async def test_the_app_chats_through_llama_cpp_server(theirs):
    from support.app import READOUT, conversation_text, until

    from edgechat.tui.app import EdgechatApp, LaunchOptions
    from edgechat.tui.chat import ChatScreen

    app = EdgechatApp(
        LaunchOptions(start="chat", remote=theirs.url), sample_readouts=lambda: READOUT
    )
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.engine is not None and isinstance(app.screen, ChatScreen))
        assert not app.engine.is_local and "127.0.0.1" in app.model_id
        note = str(app.screen.query(".note").first().render())
        assert "sent there" in note  # said before anything is typed
        await pilot.press(*"Name three colours.", "enter")
        await until(
            pilot, lambda: not app.screen.generating and "## Assistant" in conversation_text(app)
        )
        messages = app.store.messages(app.screen.conversation.id)
        assert [m.role for m in messages] == ["user", "assistant"]
        assert messages[1].content.strip()
        assert "remote" in str(app.screen.query_one("#rss").render())


async def test_the_picker_offers_a_remote_server(ours):
    from support.app import READOUT, until

    from edgechat.tui.app import EdgechatApp, LaunchOptions
    from edgechat.tui.chat import ChatScreen
    from edgechat.tui.dialogs import Ask
    from edgechat.tui.wizard import WizardScreen

    app = EdgechatApp(LaunchOptions(start="auto"), sample_readouts=lambda: READOUT)
    async with app.run_test(size=(100, 30)) as pilot:
        app.open_wizard()
        await until(pilot, lambda: isinstance(app.screen, WizardScreen))
        await pilot.press("ctrl+r")
        await until(pilot, lambda: isinstance(app.screen, Ask))
        app.screen.query_one("#answer").value = ours.url
        await pilot.press("enter")
        await until(
            pilot,
            lambda: (
                app.engine is not None
                and not app.engine.is_local
                and isinstance(app.screen, ChatScreen)
            ),
        )
        assert app.model_id.endswith("@ " + ours.url.split("//")[1].split("/")[0])
