"""The server's worker (serve/worker.py) on the real SmolLM2, without HTTP: prompts are
built on the worker's prompt thread, once, so one client's costly prompt never stops
another's reply, and every token a client sends is checked before llama.cpp sees it."""

from __future__ import annotations

import queue
import threading

import pytest

from edgechat.llama.engine import Engine
from edgechat.planning.plan import RunPlan, Sampling
from edgechat.serve.worker import Job, LlamaWorker

pytestmark = pytest.mark.model

GREEDY = Sampling(temperature=0.0, max_tokens=24)


class Events:
    """One job's events, as the worker emits them (from its threads)."""

    def __init__(self) -> None:
        self.q: queue.Queue = queue.Queue()

    def emit(self, event: tuple) -> None:
        self.q.put(event)

    def end(self, timeout: float = 120) -> tuple[str, tuple]:
        """The whole reply's text and its last event."""
        text = []
        while True:
            event = self.q.get(timeout=timeout)
            if event[0] == "text":
                text.append(event[1])
            elif event[0] != "start":
                return "".join(text), event


@pytest.fixture(scope="module")
def worker(starter_path):
    w = LlamaWorker(lambda: Engine(RunPlan(starter_path, n_ctx=512, n_threads=1, n_seq=2)))
    w.start()
    yield w
    w.stop()


def test_a_prompt_that_takes_long_to_build_stops_no_other_reply(worker):
    """Failed before the fix (the llama thread built every prompt between its steps):
    while one client's chat was being rendered and fitted (1,200 turns took 83 s), no
    other reply moved. Here that prompt is held until the reply already running ends.
    (Prompts are built one at a time, each within its budget: a prompt that arrives
    after this one waits for it, as a request waits for a slot.)"""
    engine, release = worker.engine, threading.Event()
    build = engine.chat_tokens

    def slow(messages, *args, **kwargs):
        if messages[-1]["content"] == "slow":
            assert release.wait(120)
        return build(messages, *args, **kwargs)

    engine.chat_tokens = slow
    try:
        held, other = Events(), Events()
        worker.submit(Job(GREEDY, other.emit, prompt="1, 2, 3, 4,"))
        assert other.q.get(timeout=120) == ("start",)
        worker.submit(Job(GREEDY, held.emit, [{"role": "user", "content": "slow"}]))
        text, last = other.end()  # before the fix: the llama thread waited on "slow"
        assert last[:2] == ("end", "length") and text.strip()
        release.set()
        assert held.end()[1][:2] == ("end", "length")
    finally:
        release.set()
        del engine.chat_tokens


@pytest.mark.parametrize("context", [[99_999_999], [-5], [2**40], [1] * 600])
def test_tokens_a_client_sends_are_checked_before_they_reach_llama_cpp(worker, context):
    """Failed before the fix: [99999999] or [-5] failed the decode of every reply (code
    -1), and 2**40 was wrapped silently to a valid id."""
    running, bad = Events(), Events()
    worker.submit(Job(Sampling(temperature=0.0, max_tokens=40), running.emit, prompt="1, 2,"))
    job = Job(GREEDY, bad.emit, [{"role": "user", "content": "hi"}], prefix=context)
    worker.submit(job)
    text, last = bad.end()
    assert last[0] == "error" and last[1].status == 400 and not text
    assert "token" in last[1].message
    text, last = running.end()
    assert last[:2] == ("end", "length")  # the other reply ran to its end


def test_a_repeat_window_beyond_the_context_is_held_to_it(worker):
    """Failed before the fix: a window of 2^31 tokens asked llama.cpp for 8 GiB (one
    request aborted the server under a memory limit)."""
    events = Events()
    sampling = Sampling(temperature=0.0, max_tokens=4, repeat_penalty=1.1, repeat_last_n=2**31)
    job = Job(sampling, events.emit, prompt="1, 2, 3,")
    worker.submit(job)
    assert events.end()[1][:2] == ("end", "length")
    assert job.sampling.repeat_last_n == 512  # the context: it sees no more than that
