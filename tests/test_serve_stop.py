"""Stopping `edgechat serve` (Ctrl-C) while a reply streams (issue 23): the stream ends
the way a finished one does, with a last chunk whose finish reason says it was cut
(``cancelled``) and ``data: [DONE]``, so a client never takes a cut reply for a whole
one. Read as raw server-sent events: what any client library sees."""

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
