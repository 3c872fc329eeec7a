"""A hostile server on loopback, for the remote engines: it answers OpenAI's and Ollama's
APIs well by default, and each route can be scripted to misbehave (redirect elsewhere,
stall, send HTML, garbage, wrong shapes, a line of 50 MB, a stream with no end).

Every request is recorded (method, path, headers, body), so a test can check that
nothing reached a host it should not have.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Reply = Callable[[BaseHTTPRequestHandler], None]


def send(status: int = 200, body: bytes = b"", kind: str = "application/json", **headers) -> Reply:
    def reply(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", kind)
        h.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            h.send_header(name.replace("_", "-"), value)
        h.end_headers()
        h.wfile.write(body)

    return reply


def as_json(value, status: int = 200) -> Reply:
    return send(status, json.dumps(value).encode())


def html(status: int = 200) -> Reply:
    return send(status, b"<!doctype html><html><body>Welcome to nginx!</body></html>", "text/html")


def redirect(location: str, status: int = 307) -> Reply:
    return send(status, b"", "text/plain", Location=location)


def stream(lines: list[bytes], kind: str = "text/event-stream", stall: float = 0.0) -> Reply:
    """Write ``lines`` as they are, then (``stall`` seconds) hold the connection, then
    close it: the body ends when the connection does (no length, HTTP/1.0)."""

    def reply(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", kind)
        h.end_headers()
        for line in lines:
            h.wfile.write(line)
            h.wfile.flush()
        deadline = time.monotonic() + stall
        while time.monotonic() < deadline and not h.server.closing.is_set():  # type: ignore[attr-defined]
            time.sleep(0.05)

    return reply


def huge(kind: str = "text/event-stream", size: int = 50 << 20) -> Reply:
    """One line of ``size`` bytes (no newline), written in blocks until the reader stops."""

    def reply(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", kind)
        h.end_headers()
        block = b"data: " + b"x" * (1 << 16)
        try:
            for _ in range(size // len(block) + 1):
                h.wfile.write(block)
        except OSError:  # the reader stopped it: what the test wants
            pass

    return reply


def sse(*events, done: bool = True) -> list[bytes]:
    out = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events]
    return out + ([b"data: [DONE]\n\n"] if done else [])


def chunk(text: str | None = None, finish: str | None = None) -> dict:
    delta = {"role": "assistant", "content": text} if text is not None else {}
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "stranger",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def ndjson(*parts) -> list[bytes]:
    return [(p if isinstance(p, str) else json.dumps(p)).encode() + b"\n" for p in parts]


def part(text: str = "", done: bool = False) -> dict:
    out = {"model": "smol:latest", "created_at": "2025-01-01T00:00:00Z", "done": done}
    out["message"] = {"role": "assistant", "content": text}
    return out | ({"done_reason": "stop", "eval_count": 2} if done else {})


def models(*ids: str, meta=None) -> Reply:
    entries = [{"id": i, "object": "model", "owned_by": "me"} for i in ids]
    if meta is not None:
        for e in entries:
            e["meta"] = meta
    return as_json({"object": "list", "data": entries})


def openai_routes() -> dict[str, Reply]:
    return {
        "GET /v1/models": models("stranger", meta={"n_ctx": 2048}),
        "POST /v1/chat/completions": stream(
            sse(chunk("Hello"), chunk(" there"), chunk(finish="stop"))
        ),
        "POST /v1/completions": stream(
            sse({"choices": [{"index": 0, "text": " 5,", "finish_reason": "length"}]})
        ),
    }


def ollama_routes() -> dict[str, Reply]:
    return {
        "GET /api/version": as_json({"version": "0.9.0"}),
        "GET /api/tags": as_json({"models": [{"name": "smol:latest", "model": "smol:latest"}]}),
        "GET /api/ps": as_json({"models": []}),
        "POST /api/show": as_json({"parameters": "num_ctx    2048", "model_info": {}}),
        "POST /api/chat": stream(
            ndjson(part("Hello"), part(" there"), part(done=True)), "application/x-ndjson"
        ),
    }


class Stranger:
    """``routes``: "METHOD /path" -> reply; what is not scripted answers 404."""

    def __init__(self, routes: dict[str, Reply] | None = None) -> None:
        self.routes = dict(routes or {})
        self.requests: list[tuple[str, str, dict, bytes]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                path = self.path.split("?", 1)[0]
                server.requests.append((self.command, path, dict(self.headers), body))
                reply = server.routes.get(f"{self.command} {path}")
                try:
                    if reply is None:
                        as_json({"error": "not found"}, 404)(self)
                    else:
                        reply(self)
                except OSError:  # the client went away
                    pass

            do_GET = do_POST = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.closing = threading.Event()  # type: ignore[attr-defined]
        self.root = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.host = self.root.split("//", 1)[1]
        self.url = self.root + "/v1"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def paths(self) -> list[str]:
        return [f"{m} {p}" for m, p, _, _ in self.requests]

    def close(self) -> None:
        self.httpd.closing.set()  # type: ignore[attr-defined]
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> Stranger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
