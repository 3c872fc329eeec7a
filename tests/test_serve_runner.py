"""`serve` runs its model in a runner process (serve/runner.py): when llama.cpp dies by a
native fault there, the requests in flight get an error in their API's shape instead of a
dropped connection, and the server loads the model again for the next ones (issue 29).
The fault is the real signal a crashing kernel raises, sent to the runner mid-reply."""

from __future__ import annotations

import signal
import threading
import time

import ollama
import openai
import psutil
import pytest
from support.serving import edgechat_serve

pytestmark = [pytest.mark.model, pytest.mark.subprocess]


def _runner(server) -> psutil.Process:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for proc in psutil.Process(server.proc.pid).children(recursive=True):
            try:
                if "edgechat.serve.runner" in proc.cmdline():
                    return proc
            except psutil.Error:
                continue
        time.sleep(0.05)
    raise AssertionError("no runner process")


def test_a_crash_in_the_model_answers_every_open_request_and_the_model_comes_back(
    starter_path,
):
    server = edgechat_serve(starter_path, "--ctx", "1024", "--parallel", "2", "--threads", "1")
    try:
        base = server.url.removesuffix("/v1")
        oai = openai.OpenAI(base_url=server.url, api_key="none", max_retries=0)
        oll = ollama.Client(host=base)
        model = oai.models.list().data[0].id
        seen: dict[str, list] = {"openai": [], "ollama": []}
        errors: dict[str, BaseException] = {}
        essay = [{"role": "user", "content": "Write a long essay about the sea."}]

        def stream_openai() -> None:
            try:
                for chunk in oai.chat.completions.create(
                    model=model, messages=essay, max_tokens=1000, stream=True
                ):
                    seen["openai"].append(chunk.choices[0].delta.content or "")
            except openai.APIError as exc:
                errors["openai"] = exc

        def stream_ollama() -> None:
            try:
                for part in oll.chat(
                    model=model, messages=essay, stream=True, options={"num_predict": 1000}
                ):
                    seen["ollama"].append(part.message.content)
            except ollama.ResponseError as exc:
                errors["ollama"] = exc

        clients = [threading.Thread(target=f) for f in (stream_openai, stream_ollama)]
        for t in clients:
            t.start()
        deadline = time.monotonic() + 60
        while not (len(seen["openai"]) > 3 and len(seen["ollama"]) > 3):
            assert time.monotonic() < deadline, seen
            time.sleep(0.05)
        first = _runner(server)
        first.send_signal(signal.SIGSEGV)
        for t in clients:
            t.join(60)
        # Each client got an error in its API's shape, saying what happened.
        assert set(errors) == {"openai", "ollama"}, (errors, server.log)
        for exc in errors.values():
            assert "crashed (SIGSEGV" in str(exc) and "try again" in str(exc), exc
        # The model is back in a new runner, and answers.
        reply = oai.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=5
        )
        assert reply.choices[0].message.content
        assert _runner(server).pid != first.pid
        assert oll.generate(model=model, prompt="Hi", options={"num_predict": 5}).response
        assert "the model is back" in server.log
    finally:
        assert server.stop() == 130
    assert "Traceback" not in server.log
