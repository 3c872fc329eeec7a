"""What a hostile client can do to `edgechat serve`'s HTTP side, on the real uvicorn
server with the server's own settings (serve/server.py ``uvicorn_config``, serve/guard.py)
in this process, with real clients over loopback sockets. No model: every request here
is answered before it would reach the llama thread (the worker is never started).

Each class of issue 30 (items 2, 4, 5, 6) has a test that failed before its fix."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest
import uvicorn

from edgechat.planning.plan import Sampling
from edgechat.serve import guard
from edgechat.serve.app import ServeConfig
from edgechat.serve.ollama import OllamaModel
from edgechat.serve.server import bind, uvicorn_config
from edgechat.serve.worker import LlamaWorker

KEY = "hostile-test-key-91c2"
OLLAMA = OllamaModel(
    name="m:latest",
    details={},
    model_info={},
    template="",
    parameters="",
    license="",
    size=1,
    size_loaded=1,
    size_vram=0,
    digest="0" * 64,
    modified_at="2026-01-01T00:00:00Z",
    context_length=1024,
)


class Live:
    """The server on a free loopback port, in a thread of this process."""

    def __init__(self, key: str | None = None, **settings) -> None:
        worker = LlamaWorker(lambda: None)  # never started: nothing here reaches it
        config = ServeConfig(
            model_id="m",
            aliases=frozenset({"m", "m:latest"}),
            sampling=Sampling(),
            api_key=key,
            ollama=OLLAMA,
        )
        self.sock = bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn_config(worker, config, log_config=None, **settings))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.server.started

    def raw(self, data: bytes) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port))
        s.settimeout(20)
        s.sendall(data)
        return s

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def live(monkeypatch):
    monkeypatch.setattr(guard, "HEAD_S", 0.5)
    monkeypatch.setattr(guard, "BODY_S", 5)
    server = Live()
    yield server
    server.stop()


def read_all(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


# -- item 4: limits that hold -------------------------------------------------------------


def test_a_chunked_body_over_32_mib_is_refused_as_it_arrives(live):
    """Failed before the fix: with no Content-Length the whole body was read (50 MB
    answered 200)."""
    sent = 0

    def body():
        nonlocal sent
        yield b'{"model": "nope", "prompt": "'
        for _ in range(40):
            sent += 2**20
            yield b"a" * 2**20
        yield b'"}'

    r = httpx.post(live.url + "/v1/completions", content=body(), timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    r = httpx.post(live.url + "/api/generate", content=body(), timeout=60)
    assert r.status_code == 413 and set(r.json()) == {"error"}  # Ollama's shape


def test_a_half_sent_request_is_closed_not_held(live):
    """Failed before the fix: half a request line, or a head with half its body, held
    its connection forever."""
    head = live.raw(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
    assert read_all(head).startswith(b"HTTP/1.1 408 ")  # then closed
    body = live.raw(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    answer = read_all(body)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"connection: close" in answer.lower()
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"
    silent = live.raw(b"")  # a connection that never says a word is closed too
    assert read_all(silent) == b""


def test_a_head_without_end_is_refused_by_its_size(live):
    s = live.raw(b"GET /health HTTP/1.1\r\n")
    try:
        for _ in range(200):
            s.sendall(b"X-Filler: " + b"a" * 1000 + b"\r\n")
    except OSError:  # the server closed while we still sent
        pass
    try:
        answer = read_all(s)
    except ConnectionResetError:  # closed with our bytes unread: TCP resets, the 431 is lost
        answer = b"HTTP/1.1 431 "
    assert answer.startswith(b"HTTP/1.1 431 ")  # closed, not held
    assert httpx.get(live.url + "/health").status_code == 200


def test_beyond_the_connection_cap_a_request_gets_503_at_once(monkeypatch):
    """Failed before the fix (no cap): 200 half-sent requests were all held open; then the
    503 was uvicorn's plain text."""
    monkeypatch.setattr(guard, "HEAD_S", 30)
    server = Live(limit_concurrency=8)
    try:
        held = [server.raw(b"GET /health HTTP/1.1\r\n") for _ in range(8)]
        time.sleep(0.2)
        assert httpx.get(server.url + "/health", timeout=10).status_code == 503
        # In the shape of the API asked, as every other refusal (uvicorn's was plain text).
        openai_busy = httpx.get(server.url + "/v1/models", timeout=10)
        assert openai_busy.status_code == 503
        assert openai_busy.json()["error"]["code"] == "server_busy"
        ollama_busy = httpx.get(server.url + "/api/tags", timeout=10)
        assert ollama_busy.status_code == 503 and "try again" in ollama_busy.json()["error"]
        for s in held:
            s.close()
        deadline = time.monotonic() + 10
        while httpx.get(server.url + "/health", timeout=10).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        server.stop()


# -- item 5: /health tells only liveness without the key ------------------------------------


def test_health_without_the_key_is_a_bare_liveness_answer():
    """Failed before the fix: the model and every counter, to anyone."""
    server = Live(key=KEY)
    try:
        assert httpx.get(server.url + "/health").json() == {"status": "ok"}
        wrong = httpx.get(server.url + "/health", headers={"Authorization": "Bearer nope"})
        assert wrong.json() == {"status": "ok"}
        full = httpx.get(server.url + "/health", headers={"Authorization": f"Bearer {KEY}"})
        assert full.json()["model"] == "m" and "served" in full.json()
    finally:
        server.stop()


# -- item 6: client mistakes are 400s in the API's shape -----------------------------------


def post(url: str, body: bytes) -> httpx.Response:
    return httpx.post(url, content=body, headers={"Content-Type": "application/json"}, timeout=30)


def test_nested_json_and_lone_surrogates_are_400s(live):
    """Failed before the fix: RecursionError and UnicodeEncodeError, answered 500."""
    deep = b'{"model": "m", "prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    lone = [
        b'{"model": "\\ud800", "prompt": "hi"}',
        b'{"model": "m", "prompt": "a\\udc00b"}',
        b'{"model": "m", "messages": [{"role": "user", "content": "\\ud83d"}]}',
    ]
    for path in ("/v1/completions", "/v1/chat/completions"):
        for body in (deep, *lone):
            r = post(live.url + path, body)
            assert r.status_code == 400, (path, body[:40], r.text)
            assert r.json()["error"]["code"] == "invalid_json"
    for path in ("/api/generate", "/api/chat"):
        for body in (
            deep,
            b'{"model": "m", "prompt": "hi", "system": "\\udfff"}',
            b'{"model": "\\ud800"}',
        ):
            r = post(live.url + path, body)
            assert r.status_code == 400 and set(r.json()) == {"error"}, r.text
    assert "nested too deeply" in post(live.url + "/api/chat", deep).json()["error"]
    assert "half a character" in post(live.url + "/api/chat", lone[0]).json()["error"]


def test_an_empty_completion_prompt_is_a_400(live):
    """Failed before the fix: 'internal error: EdgechatError: the prompt is empty', 500."""
    for prompt in ("", [""]):
        r = httpx.post(live.url + "/v1/completions", json={"model": "m", "prompt": prompt})
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"


# -- item 2: every option a client sets has a bound -----------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"repeat_last_n": 2147483647},
        {"repeat_last_n": -2},
        {"num_predict": 10**9},
        {"num_ctx": 2**40},
        {"seed": 2**70},
        {"top_k": 10**6},
        {"stop": ["x"] * 17},
        {"stop": ["x" * 10_000]},
    ],
)
def test_ollama_options_beyond_their_bounds_are_400s(live, options):
    """Failed before the fix for repeat_last_n (a 2^31 window: std::bad_alloc, the
    server aborted), num_predict, num_ctx, seed and the stop strings (no bounds)."""
    r = httpx.post(
        live.url + "/api/generate", json={"model": "m", "prompt": "hi", "options": options}
    )
    assert r.status_code == 400 and next(iter(options)) in r.json()["error"], r.text
    infinite = b'{"model": "m", "prompt": "hi", "options": {"temperature": 1e400}}'
    assert post(live.url + "/api/generate", infinite).status_code == 400


@pytest.mark.parametrize(
    "extra",
    [
        {"seed": 2**70},
        {"stop": ["x"] * 17},
        {"stop": "x" * 10_000},
        {"user": "u" * 5000},
        {"cache_salt": 5},
    ],
)
def test_openai_fields_beyond_their_bounds_are_400s(live, extra):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
    r = httpx.post(live.url + "/v1/chat/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"].startswith(next(iter(extra)))
