"""Stopping `edgechat serve` (Ctrl-C) while a reply streams (issue 23, issue 31 item 2):
the stream ends the way a finished one does, with a last chunk whose finish reason says
it was cut (``cancelled``): OpenAI's with ``data: [DONE]`` (read as raw server-sent
events: what any client library sees), Ollama's with a ``done`` object (read with the
official ``ollama`` client), so a client never takes a cut reply for a whole one."""

from __future__ import annotations

import json
import signal
import urllib.request

import pytest
from support.serving import edgechat_serve

pytestmark = [pytest.mark.model, pytest.mark.subprocess]


def _text(line: bytes) -> str:
    """The text a server-sent event carries (a chat delta's or a completion's)."""
    if not line.startswith(b"data: {"):
        return ""
    choice = json.loads(line[6:])["choices"][0]
    return choice.get("text") or choice.get("delta", {}).get("content") or ""


@pytest.mark.parametrize("path", ["chat/completions", "completions"])
def test_ctrl_c_ends_an_open_stream_with_a_cut_finish_and_done(starter_path, path):
    server = edgechat_serve(starter_path, "--ctx", "1024", "--threads", "1")
    try:
        body = {"max_tokens": 1000, "temperature": 0, "stream": True}
        if path == "chat/completions":
            body["messages"] = [{"role": "user", "content": "Count from 1 to 500."}]
        else:
            body["prompt"] = "1, 2, 3, 4,"
        request = urllib.request.Request(
            f"{server.url}/{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            lines = [response.readline()]
            while not _text(lines[-1]):
                lines.append(response.readline())  # generating now
            server.proc.send_signal(signal.SIGINT)
            lines += response.read().splitlines()  # to the end of the response
        events = [line.decode().strip() for line in lines if line.startswith(b"data: ")]
        assert events[-1] == "data: [DONE]", events[-3:]
        last = json.loads(events[-2].removeprefix("data: "))
        assert last["choices"][0]["finish_reason"] == "cancelled", last
        assert len(events) < 900  # cut short, not run to the end
    finally:
        assert server.stop() == 130
    assert "Traceback" not in server.log


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stopping_ends_every_open_ollama_stream_as_cut(starter_path, sig):
    """Issue 31 item 2: with `--parallel 2`, a streamed /api/chat and /api/generate open at
    once when the server is stopped (Ctrl-C, or SIGTERM as from systemd or Docker) each
    end, through the official `ollama` client, with a last object that is
    ``done`` and says it was cut (``done_reason`` "cancelled", as the OpenAI stream's
    finish reason), never a stream that just stops mid-reply."""
    ollama = pytest.importorskip("ollama")
    server = edgechat_serve(starter_path, "--ctx", "1024", "--parallel", "2", "--threads", "1")
    client = ollama.Client(host=server.base)
    name = client.list().models[0].model
    options = {"temperature": 0, "num_predict": 1000}
    streams = {
        "chat": client.chat(
            model=name,
            messages=[{"role": "user", "content": "Count from 1 to 500."}],
            options=options,
            stream=True,
        ),
        "generate": client.generate(
            model=name, prompt="1, 2, 3, 4,", raw=True, options=options, stream=True
        ),  # fmt: skip
    }
    got: dict[str, list] = {}
    try:
        for what, stream in streams.items():
            got[what] = [next(stream)]  # generating now, both at once
        server.proc.send_signal(sig)
        for what, stream in streams.items():
            got[what] += list(stream)  # to the end of each response
    finally:
        code = server.stop()
    assert code == (130 if sig == signal.SIGINT else -signal.SIGTERM), code
    for what, parts in got.items():
        last = parts[-1]
        assert last.done and last.done_reason == "cancelled", (what, parts[-3:])
        assert not any(p.done for p in parts[:-1]), what
        assert 0 < last.eval_count < 1000 and len(parts) < 900, what  # cut short
    assert "Traceback" not in server.log
