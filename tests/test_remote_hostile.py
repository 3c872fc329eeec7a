"""A remote server is a stranger (issue 30, items 7-8): against a hostile server on
loopback (tests/support/stranger.py), no redirect carries the key or the words to
another host, and whatever it sends (HTML, garbage, wrong shapes, a 50 MB line, a
stall, a stream with no end) is one line, never a traceback or a reply taken as whole."""

from __future__ import annotations

import json

import pytest
from support import stranger as s
from support.stranger import Stranger

from edgechat import cli
from edgechat.errors import EdgechatError

pytest.importorskip("openai")
pytest.importorskip("ollama")

KEY = "sk-secret-key-123"


@pytest.fixture
def elsewhere():
    """Another origin, which must never hear from the client."""
    with Stranger(s.openai_routes() | s.ollama_routes()) as other:
        yield other


def chat(url: str, *more: str) -> list[str]:
    return ["chat", "--plain", "--remote", url, *more, "Say hi."]


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("edgechat: ")
    return last


# -- 7: no redirect carries the key or the words elsewhere ---------------------------------


def test_the_ollama_probe_follows_no_redirect_with_the_key(elsewhere, capsys, monkeypatch):
    monkeypatch.setenv("EDGECHAT_API_KEY", KEY)
    routes = s.openai_routes() | {"GET /api/version": s.redirect(elsewhere.root + "/api/version")}
    with Stranger(routes) as server:
        assert cli.main(chat(server.root)) == 0  # the OpenAI API answers at the same host
        assert elsewhere.requests == []  # the key never went there
        assert f"your text is sent to {server.host}" in capsys.readouterr().err


@pytest.mark.parametrize("route", ["GET /v1/models", "POST /v1/chat/completions"])
def test_openai_redirects_are_refused_and_say_where(route, elsewhere, capsys, monkeypatch):
    monkeypatch.setenv("EDGECHAT_API_KEY", KEY)
    path = route.split(" ")[1]
    with Stranger(s.openai_routes() | {route: s.redirect(elsewhere.url + path[3:])}) as server:
        assert cli.main(chat(server.url)) == 1
        line = one_line(capsys)
        assert "follows no redirect" in line and elsewhere.root in line and "and key" in line
    assert elsewhere.requests == []  # neither the key nor the conversation went there


def test_an_ollama_chat_redirect_is_refused(elsewhere, capsys):
    routes = s.ollama_routes() | {"POST /api/chat": s.redirect(elsewhere.root + "/api/chat")}
    with Stranger(routes) as server:
        assert cli.main(chat(server.root)) == 1
        assert "follows no redirect" in one_line(capsys)
    assert elsewhere.requests == []


# -- 8: bad replies are one line ---------------------------------------------------------

OPENAI_BAD = {
    "models as a web page": ("GET /v1/models", s.html(), "web page"),
    "models not JSON": ("GET /v1/models", s.send(body=b"{not json"), "not its API's reply"),
    "models data 5": ("GET /v1/models", s.as_json({"data": 5}), "no list of models"),
    "models data [5]": ("GET /v1/models", s.as_json({"data": [5]}), "lists no models"),
    "models 50 MB line": ("GET /v1/models", s.huge("application/json"), "line of over"),
    "models 500 with a page": ("GET /v1/models", s.html(500), "answered 500"),
    "chat as a web page": ("POST /v1/chat/completions", s.html(), "web page"),
    "chat malformed SSE": (
        "POST /v1/chat/completions",
        s.stream([b"data: {not json\n\n"]),
        "not its API's reply",
    ),
    "chat choices 5": (
        "POST /v1/chat/completions",
        s.stream(s.sse({"choices": 5})),
        "without a list of choices",
    ),
    "chat content 5": (
        "POST /v1/chat/completions",
        s.stream(s.sse({"choices": [{"index": 0, "delta": {"content": 5}}]})),
        "wrong shape",
    ),
    "chat 50 MB line": ("POST /v1/chat/completions", s.huge(), "line of over"),
    "chat an empty 200": ("POST /v1/chat/completions", s.stream([]), "without a reply"),
    "chat plain text": (
        "POST /v1/chat/completions",
        s.stream([b"hello there"], "text/plain"),
        "without a reply",
    ),
}


@pytest.mark.parametrize("case", list(OPENAI_BAD))
def test_bad_openai_replies_are_one_line(case, capsys):
    route, reply, said = OPENAI_BAD[case]
    with Stranger(s.openai_routes() | {route: reply}) as server:
        assert cli.main(chat(server.url)) == 1
        assert said in one_line(capsys)


OLLAMA_BAD = {
    "tags models 5": ("GET /api/tags", s.as_json({"models": 5}), "not its API's reply"),
    "tags not JSON": ("GET /api/tags", s.send(body=b"<<<"), "not its API's reply"),
    "ps as a web page": ("GET /api/ps", s.html(), "web page"),
    "chat message 5": (
        "POST /api/chat",
        s.stream(s.ndjson({"message": 5, "done": False}), "application/x-ndjson"),
        "not its API's reply",
    ),
    "chat malformed NDJSON": (
        "POST /api/chat",
        s.stream([b'{"message": {"role": "assistant", "content": "Hi"\n']),
        "not its API's reply",
    ),
    "chat a list": ("POST /api/chat", s.stream(s.ndjson([1, 2])), "not its API's reply"),
    "chat 50 MB line": ("POST /api/chat", s.huge("application/x-ndjson"), "line of over"),
}


@pytest.mark.parametrize("case", list(OLLAMA_BAD))
def test_bad_ollama_replies_are_one_line(case, capsys):
    route, reply, said = OLLAMA_BAD[case]
    with Stranger(s.ollama_routes() | {route: reply}) as server:
        assert cli.main(chat(server.root)) == 1
        assert said in one_line(capsys)


@pytest.mark.parametrize("n_ctx", ["abc", -5, 1e300, True, {"a": 1}, [4096]])
def test_a_context_size_that_is_not_one_is_not_believed(n_ctx):
    from edgechat.llama.remote import DEFAULT_CTX, RemoteEngine

    routes = s.openai_routes() | {"GET /v1/models": s.models("m", meta={"n_ctx": n_ctx})}
    with Stranger(routes) as server, RemoteEngine(server.url) as engine:
        assert engine.n_ctx == DEFAULT_CTX and not engine.n_ctx_known
        assert engine.chat([{"role": "user", "content": "hi"}]).collect() == "Hello there"


def test_a_huge_context_size_in_json_is_not_believed():
    from edgechat.llama.remote import DEFAULT_CTX, RemoteEngine

    body = b'{"data": [{"id": "m", "meta": {"n_ctx": 1e400}}]}'  # inf to Python's json
    routes = s.openai_routes() | {"GET /v1/models": s.send(body=body)}
    with Stranger(routes) as server, RemoteEngine(server.url) as engine:
        assert engine.n_ctx == DEFAULT_CTX


# -- a stream that stops without its end is cut, not whole --------------------------------


def test_an_openai_stream_without_its_end_is_reported_cut(capsys):
    routes = s.openai_routes()
    routes["POST /v1/chat/completions"] = s.stream(s.sse(s.chunk("Hello"), done=False))
    with Stranger(routes) as server:
        assert cli.main(chat(server.url)) == 1
        out = capsys.readouterr()
        assert out.out.startswith("Hello")  # what came is shown ...
        assert "stopped before the end of the reply" in out.err  # ... and said to be partial


def test_an_ollama_stream_without_done_is_reported_cut(capsys):
    routes = s.ollama_routes()
    routes["POST /api/chat"] = s.stream(s.ndjson(s.part("Hello")), "application/x-ndjson")
    with Stranger(routes) as server:
        assert cli.main(chat(server.root)) == 1
        assert "stopped before the end of the reply" in one_line(capsys)


def test_a_cut_reply_keeps_nothing_in_the_line_chat(capsys):
    from edgechat.cli.plain import PlainChat
    from edgechat.llama.remote import RemoteEngine
    from edgechat.planning.plan import Sampling

    routes = s.openai_routes()
    routes["POST /v1/chat/completions"] = s.stream(s.sse(s.chunk("Hel"), done=False))
    with Stranger(routes) as server, RemoteEngine(server.url) as engine:
        session = PlainChat(engine, Sampling(), "")
        with pytest.raises(EdgechatError):
            session.ask("hi")
        assert session.conv.messages == []  # neither the question nor half an answer
        assert engine.last_stats.finish == "cut"


# -- stalls end in seconds ---------------------------------------------------------------


@pytest.fixture
def short_timeout(monkeypatch):
    from edgechat.llama import remote_http

    monkeypatch.setattr(remote_http, "READ_TIMEOUT_S", 0.5)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "api,route",
    [
        ("openai", "GET /v1/models"),
        ("openai", "POST /v1/chat/completions"),
        ("ollama", "POST /api/chat"),
    ],
)
def test_a_stalled_server_is_given_up_in_seconds(api, route, short_timeout, capsys):
    first = s.sse(s.chunk("Hel"), done=False) if "chat" in route else []
    if api == "ollama":
        first = s.ndjson(s.part("Hel"))
    routes = (s.openai_routes() if api == "openai" else s.ollama_routes()) | {
        route: s.stream(first, stall=20)
    }
    with Stranger(routes) as server:
        assert cli.main(chat(server.url if api == "openai" else server.root)) == 1
        assert "sent nothing for" in one_line(capsys)


def test_the_default_read_timeout_is_seconds_not_minutes():
    from edgechat.llama import remote_http

    assert remote_http.timeout().read <= 120 and remote_http.timeout().connect <= 30


# -- the server's words are shown without terminal escapes -------------------------------


def test_names_from_the_server_reach_the_terminal_without_escapes(capsys):
    evil = "\x1b]0;pwned\x07\x1b[2Jmodel"
    routes = s.openai_routes() | {"GET /v1/models": s.models(evil)}
    with Stranger(routes) as server:
        assert cli.main(chat(server.url)) == 0
        err = capsys.readouterr().err
        assert "\x1b" not in err and "\x07" not in err and "model" in err
        assert cli.main(chat(server.url, "--remote-model", "other")) == 1
        line = one_line(capsys)
        assert "\x1b" not in line and "?]0;pwned" in line


def test_an_error_message_from_the_server_is_cut_short_and_neutralised(capsys):
    body = json.dumps({"error": {"message": "\x1b[31m" + "no " * 20000}}).encode()
    routes = s.openai_routes() | {"POST /v1/chat/completions": s.send(400, body)}
    with Stranger(routes) as server:
        assert cli.main(chat(server.url)) == 1
        line = one_line(capsys)
        assert "\x1b" not in line and len(line) < 400


# -- an address that is not one is a usage error -----------------------------------------


@pytest.mark.parametrize(
    "url",
    ["not a url", "http://[::1", "ftp://host", "http://host:99999", "http://user:pw@host:80",
     "http://host:8080/v1?x=1", "http://-bad-.host", ""],
)  # fmt: skip
def test_an_address_that_is_not_one_is_a_usage_error(url, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(chat(url))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--remote" in err


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "http://[::1]:8080/v1", "https://box.lan/v1"])
def test_addresses_that_are_one(url):
    from edgechat.llama.remote import base_url

    assert base_url(url).startswith(("http://", "https://"))


def test_a_summary_from_the_server_reaches_the_terminal_without_escapes(tmp_path, capsys):
    doc = tmp_path / "notes.txt"
    doc.write_text("The meeting moved to Friday. Bring the budget figures.\n")
    evil = s.sse(s.chunk("Moved \x1b]0;pwned\x07to \x1b[2JFriday."), s.chunk(finish="stop"))
    routes = s.openai_routes() | {"POST /v1/chat/completions": s.stream(evil)}
    with Stranger(routes) as server:
        assert cli.main(["summarise", "--remote", server.url, str(doc)]) == 0
        out = capsys.readouterr().out
        assert "Friday" in out and "\x1b" not in out and "\x07" not in out
