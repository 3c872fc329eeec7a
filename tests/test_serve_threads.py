"""A server's threads follow the free cores while it runs (issue 31 item 15): it says how
many it uses (the start-up line, /health, Ollama's /api/ps), and its llama thread sets
llama.cpp's count between decodes from what it measures. The policy itself is
tests/test_follow.py; here, the real server and the real engine."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest
from support.serving import edgechat_serve

from edgechat.llama.engine import Engine
from edgechat.planning import threads
from edgechat.planning.follow import PAUSE_S
from edgechat.planning.plan import RunPlan, Sampling
from edgechat.serve.worker import Job, LlamaWorker

pytestmark = pytest.mark.model


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def ask(url: str) -> dict:
    body = {"prompt": "1, 2, 3, 4,", "max_tokens": 16, "temperature": 0}
    req = urllib.request.Request(
        url + "/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


@pytest.mark.subprocess
def test_the_server_says_how_many_threads_it_uses_and_that_they_follow(starter_path):
    server = edgechat_serve(starter_path, "--ctx", "512", "--parallel", "1", "--quiet")
    try:
        base = server.url.removesuffix("/v1")
        line = next(x for x in server.lines if "serving" in x)
        assert "following the free cores" in line
        for when in ("before", "after"):  # a reply in between
            health = get(base + "/health")
            n = health["threads"]
            assert 1 <= n <= threads.usable_cores() and health["threads_follow"], health
            assert health["threads_why"].startswith("following the free cores: ")
            assert get(base + "/api/ps")["models"][0]["threads"] == n
            if when == "before":
                assert f"{n} thread" in line
                ask(server.url)
    finally:
        server.stop()
    assert "Traceback" not in server.log


@pytest.mark.subprocess
def test_a_fixed_thread_count_is_said_to_be_fixed(starter_path):
    server = edgechat_serve(starter_path, "--ctx", "512", "--parallel", "1", "--threads", "1")
    try:
        line = next(x for x in server.lines if "serving" in x)
        assert "1 thread (--threads)" in line
        health = get(server.url.removesuffix("/v1") + "/health")
        assert health["threads"] == 1 and not health["threads_follow"]
        assert health["threads_why"] == "fixed by --threads or the threads setting"
    finally:
        server.stop()


def answer(worker: LlamaWorker) -> tuple:
    done = threading.Event()
    events = []

    def emit(event: tuple) -> None:
        events.append(event)
        if event[0] in ("end", "error"):
            done.set()

    messages = [{"role": "user", "content": "Count to ten."}]
    worker.submit(Job(Sampling(temperature=0.0, max_tokens=12), emit, messages))
    assert done.wait(60), events
    return events[-1]


def test_the_llama_thread_sets_llama_cpps_count_from_what_it_measures(starter_path, monkeypatch):
    """Other programs' CPU time, as OthersBusy reads it, is set here: all the cores busy,
    then none. The follower's choice reaches llama.cpp's context between decodes."""
    busy = [2.0]  # cores' worth of other programs' work
    monkeypatch.setattr(threads.OthersBusy, "read", lambda self: busy[0])
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)  # two, whatever runs the test
    worker = LlamaWorker(lambda: Engine(RunPlan(starter_path, n_ctx=512)))
    worker.start()
    try:
        engine = worker.engine
        lc = engine._lc
        assert worker.status()["threads_follow"]
        assert answer(worker)[0] == "end"
        assert lc.llama_n_threads(engine._ctx) == 1 == worker.status()["threads"]
        assert "other programs kept" in worker.status()["threads_why"]
        busy[0] = 0.0  # the machine is quiet again
        time.sleep(PAUSE_S * 1.5)  # a pause: the next reply starts on what it found
        assert answer(worker)[0] == "end"
        assert lc.llama_n_threads(engine._ctx) == 2 == worker.status()["threads"]
    finally:
        worker.stop()


def test_a_fixed_count_is_left_alone(starter_path):
    worker = LlamaWorker(lambda: Engine(RunPlan(starter_path, n_ctx=512, n_threads=1)))
    worker.start()
    try:
        assert answer(worker)[0] == "end"
        state = worker.status()
        assert state["threads"] == 1 and not state["threads_follow"]
        assert worker.engine._lc.llama_n_threads(worker.engine._ctx) == 1
    finally:
        worker.stop()
