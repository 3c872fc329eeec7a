"""The default thread count: one per usable core that other programs leave free while
the model loads, chosen by the engine every command loads through; shown in /stats and
the app's readouts; a reply far below the estimate suggests fewer."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import replace

import pytest

from edgechat.llama.engine import Engine
from edgechat.llama.reply import Stats
from edgechat.planning import threads
from edgechat.planning.plan import RunPlan
from edgechat.planning.threads import LoadSample, ThreadChoice, choose, slow_hint

SPIN = "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end:\n    pass\n"


@contextmanager
def busy_cores(cpus: list[int]):
    """A busy-loop process pinned to each of ``cpus`` (ended on leaving)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SPIN],
            preexec_fn=(lambda c=c: os.sched_setaffinity(0, {c})),
        )
        for c in cpus
    ]
    try:
        time.sleep(0.3)  # let them start spinning
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


needs_affinity = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS"
)


def test_one_thread_per_free_usable_core_and_never_none():
    assert choose(2, 0.05).threads == 2  # idle: every core
    assert choose(2, 0.5).threads == 2  # a core half taken still counts as free
    assert choose(2, 1.0).threads == 1  # one busy elsewhere: llama.cpp's threads would wait
    assert choose(2, 2.0).threads == 1  # all busy: one thread, never none
    assert choose(8, 2.9).threads == 5
    assert choose(4, None) == ThreadChoice(4, 4, None)
    assert "other programs kept 1.0 busy" in choose(2, 1.0).why
    assert choose(2, 0.0).why == "2 of 2 usable cores"


def test_the_plan_resolves_to_the_choice_unless_told():
    plan = RunPlan("m.gguf", n_ctx=512)
    chosen = plan.resolved(ThreadChoice(1, 2, 1.2))
    assert (chosen.n_threads, chosen.n_threads_batch) == (1, 1)
    assert replace(plan, n_threads=3).resolved(ThreadChoice(1, 2, 1.2)).n_threads == 3
    assert plan.resolved().n_threads == threads.usable_cores()


@pytest.mark.subprocess
@needs_affinity
def test_a_busy_core_is_seen_by_the_sample():
    with busy_cores([min(os.sched_getaffinity(0))]):
        sample = LoadSample()
        busy = sample.busy_elsewhere()  # waits out the shortest sample
    assert busy is not None and busy >= 0.6


@pytest.mark.model
def test_stats_and_slash_stats_say_how_many_threads_ran(engine):
    from edgechat.cli.plain import PlainChat
    from edgechat.planning.plan import Sampling

    assert engine.threads is not None and 1 <= engine.plan.n_threads <= engine.threads.usable
    out, err = io.StringIO(), io.StringIO()
    chat = PlainChat(engine, Sampling(temperature=0.0, max_tokens=4), "", out=out, err=err)
    chat.ask("Hi")
    assert chat.last_stats.threads == engine.plan.n_threads
    chat.command("/stats")
    n = engine.plan.n_threads
    assert f"· {n} thread" in err.getvalue() and engine.threads.why in err.getvalue()


@pytest.mark.model
@pytest.mark.subprocess
@needs_affinity
def test_the_engine_loads_with_a_thread_fewer_when_a_core_is_busy(starter_path):
    with (
        busy_cores([min(os.sched_getaffinity(0))]),
        Engine(RunPlan(starter_path, n_ctx=256)) as eng,
    ):
        chosen = eng.threads
        assert chosen is not None and chosen.threads <= max(1, chosen.usable - 1)
        assert eng.plan.n_threads == eng.plan.n_threads_batch == chosen.threads
        assert eng.info()["threads_why"].startswith(f"{chosen.threads} of ")
    with Engine(RunPlan(starter_path, n_ctx=256, n_threads=2)) as told:
        assert told.threads is None and told.plan.n_threads == 2  # --threads wins


def test_a_reply_far_below_the_estimate_suggests_fewer_threads():
    said = slow_hint(3.0, 64, 100.0, 2)
    assert said is not None and said[1] == 1 and "3.0 tok/s" in said[0] and "~100" in said[0]
    assert slow_hint(60.0, 64, 100.0, 2) is None  # near the estimate
    assert slow_hint(3.0, 64, 100.0, 1) is None  # one thread already
    assert slow_hint(3.0, 5, 100.0, 2) is None  # too few tokens to tell
    assert slow_hint(3.0, 64, None, 2) is None  # no estimate (bandwidth never measured)
    assert slow_hint(3.0, 64, 100.0, 8)[1] == 4


@pytest.mark.model
def test_the_line_chat_says_it_once(engine, monkeypatch):
    from edgechat.cli.plain import PlainChat
    from edgechat.planning.plan import Sampling

    err = io.StringIO()
    chat = PlainChat(engine, Sampling(), "", out=io.StringIO(), err=err)
    monkeypatch.setattr(engine, "expected_tps", 1000.0)
    slow = Stats(0.1, 10, 10, 0.1, 64, 20.0, 0.2, 74, 2048, "stop", threads=2)
    chat._hint_if_slow(slow)
    chat._hint_if_slow(slow)
    assert err.getvalue().count("try --threads 1") == 1
    monkeypatch.setattr(engine, "expected_tps", None)  # never measured: nothing to compare
    quiet = PlainChat(engine, Sampling(), "", out=io.StringIO(), err=io.StringIO())
    quiet._hint_if_slow(slow)
    assert quiet.err.getvalue() == ""


async def test_the_readout_shows_the_threads():
    from textual.app import App
    from textual.widgets import Label

    from edgechat.tui.widgets import Readouts

    class One(App):
        def compose(self):
            yield Readouts()

    app = One()
    async with app.run_test(size=(80, 5)):
        readouts = app.query_one(Readouts)
        stats = Stats(0.1, 10, 10, 0.1, 20, 0.5, 0.25, 30, 2048, "stop", threads=2)
        readouts.show_speed(stats, "2 of 2 usable cores")
        label = app.query_one("#speed", Label)
        assert str(label.render()) == "38 tok/s 0.2s 2thr"
        assert "on 2 CPU threads (2 of 2 usable cores)" in str(label.tooltip)


@needs_affinity
@pytest.mark.subprocess
def test_usable_cores_follow_the_affinity_mask_for_real():
    code = "from edgechat.planning.threads import usable_cores; print(usable_cores())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}),
    )
    assert out.stdout.strip() == "1", out.stderr
