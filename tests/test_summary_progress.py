"""A summary's progress (issue 23, item 7): one model for the CLI and the app, stages
named the same, a figure at once (reading is measured in bytes), an ETA re-costed from
this run's measured rates and the tokens ahead, so it converges; times as h:mm:ss; and a
warning with the estimate as soon as a long run is found to be long.

The summariser runs on FakeEngine with a speed: the engine keeps its own clock, so the
timings are the same on any machine, however busy (the subject is the bookkeeping, not
llama.cpp's speed)."""

from __future__ import annotations

import re

import pytest
from support.fake_engine import FakeEngine
from support.summary_docs import items_covered, numbered_report

from edgechat.planning.plan import Sampling
from edgechat.tasks.progress import LONG_S, STAGES, Meter, Progress, clock
from edgechat.tasks.summarise import Options, Summariser


def _run(n_items: int, n_ctx: int, speed: tuple[float, float], length: str = "medium"):
    engine = FakeEngine(items_covered, n_ctx=n_ctx, speed=speed)
    seen: list[Progress] = []
    s = Summariser(engine, Options(length), Sampling(0.0), progress=seen.append, now=engine.now)
    paragraphs = numbered_report(n_items)
    result = s.run(paragraphs, size_hint=sum(len(p.encode()) + 2 for p in paragraphs))
    return result, seen


def test_times_are_hours_minutes_seconds():
    assert clock(4) == "0:00:04" and clock(71385) == "19:49:45" and clock(3600) == "1:00:00"
    assert clock(-2) == "0:00:00"


def test_the_stages_come_in_order_with_a_figure_at_once():
    result, seen = _run(300, 512, (200, 20))
    assert seen[0].stage == "reading" and seen[0].elapsed_s == 0.0 and seen[0].bar is not None
    assert seen[0].line().startswith("reading ") and " of " in seen[0].line()
    order = [p.stage for p in seen]
    firsts = sorted(set(order), key=order.index)
    assert firsts == list(STAGES)  # reading, summarising, writing: no other names
    assert order == sorted(order, key=STAGES.index)  # never back to an earlier stage
    maps = [p for p in seen if p.stage == "summarising"]
    assert maps[-1].done == maps[-1].total == result.chunks
    writing = [p for p in seen if p.stage == "writing"]
    assert writing[-1].done == writing[-1].total and writing[-1].eta_s == 0.0
    assert writing[-1].line() == f"writing {writing[-1].total}/{writing[-1].total} parts · done"


@pytest.mark.parametrize(
    ("n_items", "n_ctx", "speed"),
    [(300, 512, (200, 20)), (1000, 2048, (50, 5))],
    ids=["100-chunks", "slow-machine"],
)
def test_the_eta_converges_on_the_time_the_run_took(n_items, n_ctx, speed):
    """Once a fifth of the run has passed, every ETA is within a tenth of the whole run
    of the time that was in fact left (the old ETA said 4 s for 35 s)."""
    result, seen = _run(n_items, n_ctx, speed)
    total = result.seconds
    timed = [p for p in seen if p.eta_s is not None and p.elapsed_s > 0.2 * total]
    assert len(timed) > 10
    for p in timed:
        assert abs(p.eta_s - (total - p.elapsed_s)) <= 0.1 * total, (p.line(), total)
    # The first estimate comes within the first call or two, not after a minute.
    first = next(p for p in seen if p.eta_s is not None)
    assert first.elapsed_s < 0.05 * total


def test_a_long_run_warns_once_early_with_its_estimate():
    result, seen = _run(1000, 2048, (50, 5))
    assert result.seconds > LONG_S
    warned = [p for p in seen if p.warning()]
    assert len(warned) == 1
    assert warned[0].elapsed_s < 0.05 * result.seconds  # said at once, not at the end
    assert re.fullmatch(
        r"this summary will take about \d:\d\d:\d\d more at the speed measured on this machine",
        warned[0].warning(),
    )
    short, seen = _run(300, 512, (200, 20))
    assert short.seconds < LONG_S and not any(p.warning() for p in seen)


def test_reading_reports_bytes_at_most_twice_a_second():
    now = [0.0]
    seen: list[Progress] = []
    meter = Meter(seen.append, lambda: now[0])
    meter.reading(512 * 1024, 2 * 2**20)
    now[0] += 0.1
    meter.reading(600 * 1024, 2 * 2**20)  # a tenth of a second later: not redrawn
    meter.reading(2 * 2**20, 2 * 2**20, final=True)
    assert [p.line() for p in seen] == ["reading 512 KiB of 2.0 MiB", "reading 2.0 MiB of 2.0 MiB"]
    assert seen[0].bar == 0.25 and seen[-1].bar == 1.0
    Meter(seen.append, lambda: now[0]).reading(300, None)  # a pipe: no total, no bar
    assert seen[-1].bar is None and seen[-1].line() == "reading 300 B"


def test_the_cli_renders_the_same_line_and_warns_once(capsys):
    from edgechat.cli.progress import summary

    show = summary("big.txt: ")
    show(Progress("reading", 10, 10, "bytes", None))
    show(Progress("summarising", 0, 9000, "chunks", 71385.0, 2.0, long=True))
    show(Progress("summarising", 1, 9000, "chunks", 71000.0, 9.0))
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "big.txt: reading 10 B of 10 B"
    warning = [line for line in err if "this summary will take" in line]
    assert warning == [
        "edgechat: big.txt: this summary will take about 19:49:45 more at the speed "
        "measured on this machine; Ctrl-C stops it"
    ]
    assert "big.txt: summarising 0/9000 chunks · about 19:49:45 left" in err
    assert err.index(warning[0]) < err.index(
        "big.txt: summarising 0/9000 chunks · about 19:49:45 left"
    )


def test_the_first_estimate_comes_from_the_first_prompt_batch():
    """Issue 31, item 11: no ETA came until the first part was written (40 s for the
    GPL-3). A long first prompt is read in batches: the estimate comes after its first
    one, costed from the reading speed, and the report goes on at each batch."""
    result, seen = _run(100, 4096, (50, 5))  # one call, its prompt 50 s on the fake clock
    first_call = result.calls[0]
    assert first_call.prompt_tokens > 4 * 512
    first = next(p for p in seen if p.eta_s is not None)
    assert first.elapsed_s <= 512 / 50 + 0.5  # after the first batch, not after the prompt
    left = result.seconds - first.elapsed_s
    assert 0.5 * left <= first.eta_s <= 2 * left, (first.line(), result.seconds)
    during = [p for p in seen if p.stage == "writing" and p.elapsed_s < first_call.prompt_s]
    assert len(during) >= first_call.prompt_tokens // 512 - 1  # one at each batch
    etas = [p.eta_s for p in during if p.eta_s is not None]
    assert etas == sorted(etas, reverse=True) and len(set(etas)) == len(etas)  # it moves


def test_the_bar_moves_within_a_chunk_and_within_a_part():
    """The bar filled a step (a chunk, a part) at a time; it moves as the step's prompt is
    read and its reply written, and never goes back."""
    result, seen = _run(100, 4096, (50, 5))
    writing = [p.bar for p in seen if p.stage == "writing"]
    assert writing == sorted(writing) and writing[-1] == 1.0
    assert len({b for b in writing if 0 < b < 1}) >= 4, writing
    _, seen = _run(300, 512, (200, 20))
    maps = [p for p in seen if p.stage == "summarising"]
    assert [p.bar for p in maps] == sorted(p.bar for p in maps)
    within = [p for p in maps if p.done < p.total and p.bar > p.done / p.total]
    assert len({p.done for p in within}) > maps[-1].total // 2  # in most chunks


def test_the_eta_counts_the_sentences_the_check_writes_again():
    """Each partial summary states a number its chunk does not hold and is written again
    (a call no plan counted): the ETA learns what that costs and still converges."""

    def inventing(request) -> str:
        text = request if isinstance(request, str) else request[-1]["content"]
        if text.startswith("The text does not contain"):
            return items_covered(request)  # the sentence named, without the year
        return items_covered(request).replace(" were reported.", " were reported in 1999.")

    engine = FakeEngine(inventing, n_ctx=512, speed=(200, 20))
    seen: list[Progress] = []
    s = Summariser(engine, Options("medium"), Sampling(0.0), progress=seen.append, now=engine.now)
    result = s.run(numbered_report(300))
    assert result.check.done("repaired") >= result.chunks
    total = result.seconds
    timed = [p for p in seen if p.eta_s is not None and p.elapsed_s > 0.2 * total]
    for p in timed:
        assert abs(p.eta_s - (total - p.elapsed_s)) <= 0.1 * total, (p.line(), total)
