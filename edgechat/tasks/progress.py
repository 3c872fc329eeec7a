"""One progress model for a summary, shown as it is by the CLI and by the app.

Three stages, named the same everywhere: ``reading`` (the document read and cut into
chunks, measured in bytes from the start), ``summarising`` (a partial summary of each
chunk) and ``writing`` (the summary written, in parts). The time left is the work still
ahead in tokens (prompt tokens to evaluate, tokens to generate) at the rates this run has
measured, the call under way included, times what the run spends around llama.cpp; it is
re-costed at every report, so it converges as the rates settle. The first estimate comes
as soon as the first batch of the first prompt is read (the engine's ``on_prompt``): until
a reply is timed, writing is costed at ``READ_PER_WRITE`` prompt tokens a token. The bar
moves within a step too, as the call's prompt is read and its reply written. Calls the
work ahead did not plan (a sentence written again, tasks/summary_check.py) add to what is
left in the proportion this run has seen. The first time the run is found to need more
than ``LONG_S`` it says so, once, with the estimate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgechat.llama.reply import Stats

STAGES = ("reading", "summarising", "writing")
LONG_S = 600.0  # a summary longer than this is announced with its estimate
MIN_INTERVALS = 8  # generated tokens timed before a writing rate is trusted
EVERY_S = 0.5  # reports while a reply is being written, at most this often
# Prompt tokens llama.cpp reads in the time it writes one (8-14 measured on a busy 2-core
# Xeon, SmolLM2 and Gemma 3; less on big models): the cost of writing until it is timed.
READ_PER_WRITE = 8.0


def clock(seconds: float) -> str:
    """Seconds as h:mm:ss (0:00:04, 19:49:45): what both front ends show."""
    s = max(0, round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _size(n: float) -> str:
    if n < 2**10:
        return f"{n:.0f} B"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


@dataclass(frozen=True)
class Ahead:
    """Work still to do, in tokens."""

    read: float = 0.0  # prompt tokens to evaluate
    write: float = 0.0  # tokens to generate

    def __add__(self, other: Ahead) -> Ahead:
        return Ahead(self.read + other.read, self.write + other.write)

    def less(self, read: float, write: float) -> Ahead:
        return Ahead(max(0.0, self.read - read), max(0.0, self.write - write))


@dataclass(frozen=True)
class Rates:
    """What this run measured: tokens per second, and wall time per llama.cpp second."""

    read_tps: float
    write_tps: float
    overhead: float = 1.0  # >= 1: tokenizing, Python and the rest around the calls
    evaluated: float = 1.0  # of the prompt tokens planned, the share evaluated (cache)


def seconds_left(ahead: Ahead, rates: Rates) -> float:
    """The time the work ahead takes at these rates."""
    engine_s = ahead.read * rates.evaluated / rates.read_tps + ahead.write / rates.write_tps
    return engine_s * rates.overhead


@dataclass(frozen=True)
class Timed:
    """One call's timing, finished or under way (a call under way has no Stats yet)."""

    read: int  # prompt tokens evaluated
    read_s: float
    intervals: int  # generated tokens after the first
    write_s: float  # from the first generated token to the last

    @classmethod
    def of(cls, s: Stats) -> Timed:
        return cls(s.prompt_eval_tokens, s.prompt_s, max(0, s.gen_tokens - 1), s.gen_s)


def rates_of(calls: Sequence[Timed], wall_s: float, evaluated: float = 1.0) -> Rates | None:
    """The rates these calls show, or None until a prompt (or a batch of one) is timed;
    writing, until ``MIN_INTERVALS`` generated tokens are timed, at the reading speed
    over ``READ_PER_WRITE``. ``wall_s``: the time since the first call started, of which
    the calls' own time is the engine's share."""
    read = sum(c.read for c in calls)
    read_s = sum(c.read_s for c in calls if c.read)
    intervals = sum(c.intervals for c in calls)
    write_s = sum(c.write_s for c in calls if c.intervals)
    if read <= 0 or read_s <= 0:
        return None
    timed = intervals >= MIN_INTERVALS and write_s > 0
    write_tps = intervals / write_s if timed else read / read_s / READ_PER_WRITE
    engine_s = sum(c.read_s + c.write_s for c in calls)
    return Rates(read / read_s, write_tps, max(1.0, wall_s / engine_s), evaluated)


def warning(seconds: float) -> str:
    return (
        f"this summary will take about {clock(seconds)} more at the speed measured on this machine"
    )


@dataclass(frozen=True)
class Progress:
    stage: str  # reading | summarising | writing
    done: int  # of this stage, in ``unit``
    total: int | None  # None: not known (a document from a pipe)
    unit: str  # bytes | chunks | parts
    eta_s: float | None  # seconds left for the whole summary; None until timed
    elapsed_s: float = 0.0
    long: bool = False  # the first report to find the run longer than LONG_S
    within: float = 0.0  # of the step under way (chunk, part), the share done

    @property
    def bar(self) -> float | None:
        """How full this stage's bar is (None: not known, a pipe's bytes)."""
        return min(1.0, (self.done + self.within) / self.total) if self.total else None

    def counts(self) -> str:
        if self.unit == "bytes":
            return _size(self.done) + (f" of {_size(self.total)}" if self.total else "")
        if self.stage == "writing" and self.total == 1:
            return "the summary"
        return f"{self.done}/{self.total} {self.unit}" if self.total else f"{self.done} {self.unit}"

    def left(self) -> str:
        if self.eta_s is None:
            return "" if self.stage == "reading" else " · timing it"
        if not self.eta_s and self.total and self.done >= self.total:
            return " · done"  # the last report, not 'about 0:00:00 left'
        return f" · about {clock(self.eta_s)} left"

    def line(self) -> str:
        """One line, the same in both front ends: 'summarising 3/12 chunks · about
        0:01:23 left'."""
        return f"{self.stage} {self.counts()}{self.left()}"

    def warning(self) -> str | None:
        """Said once, as soon as a long summary is found to be long."""
        return warning(self.eta_s) if self.long and self.eta_s is not None else None


class Meter:
    """The summariser's side: the stage, the work ahead, this run's calls and the one
    under way, one report at a time. ``now``: the clock it times with (a test's fake
    engine has its own)."""

    def __init__(
        self, report: Callable[[Progress], None], now: Callable[[], float] = time.perf_counter
    ) -> None:
        self.report = report
        self.now = now
        self.t0 = now()
        self.calls: list[Timed] = []
        self.ahead = Ahead()
        self._where: tuple[str, int, int | None, str] = ("reading", 0, None, "bytes")
        self._first_call: float | None = None
        self._planned = self._evaluated = 0  # prompt tokens planned, and evaluated
        # The call under way: its start, prompt and reply (tokens), and whether the work
        # ahead counts it; what of its prompt is read (tokens, of tokens, when).
        self._live: tuple[float, int, float, bool] | None = None
        self._read: tuple[int, int, float] | None = None
        self._first_piece = self._last_piece = 0.0
        self._pieces = 0
        self._shown = -1e9
        self._warned = False
        self._timed = False  # an ETA has been shown
        self._rates: Rates | None = None
        self._floor = 0.0  # the step's bar never goes back
        self._spent = [0.0, 0.0]  # engine seconds of the planned calls, and of the others

    # -- what the summariser tells it ---------------------------------------------------

    def reading(self, done: int, total: int | None, final: bool = False) -> None:
        """Bytes read so far: at most two reports a second, and the last one."""
        self._where = ("reading", done, total, "bytes")
        if final or self.now() - self._shown >= EVERY_S:
            self.show()

    def stage(self, stage: str, done: int, total: int | None, unit: str, ahead: Ahead) -> None:
        """Where the run is, and all the work from here on (the next call's included)."""
        self._where = (stage, done, total, unit)
        self.ahead = ahead
        self._floor = 0.0
        self.show()

    def started(self, prompt: int, write: float = 0.0, planned: bool = True) -> None:
        """A call starts, with about ``prompt`` tokens of prompt to evaluate and ``write``
        to generate; ``planned``: the work ahead counts it (a sentence written again is
        not planned)."""
        t = self.now()
        self._first_call = t if self._first_call is None else self._first_call
        self._live = (t, prompt, write, planned)
        self._read = None
        self._pieces = 0

    def prompt(self, done: int, total: int) -> None:
        """The engine has read ``done`` of the ``total`` prompt tokens it evaluates."""
        t = self.now()
        self._read = (done, total, t)
        if not self._timed or t - self._shown >= EVERY_S:
            self.show()

    def piece(self) -> None:
        """A token of the reply under way has arrived."""
        t = self.now()
        self._pieces += 1
        self._first_piece = t if self._pieces == 1 else self._first_piece
        self._last_piece = t
        if t - self._shown >= EVERY_S:
            self.show()

    def ended(self, stats: Stats | None) -> None:
        """The call is over: its own figures replace what was seen of it."""
        if self._live is not None and stats is not None:
            _, prompt, _, planned = self._live
            self.calls.append(Timed.of(stats))
            self._planned += prompt
            self._evaluated += stats.prompt_eval_tokens
            if planned:
                self.ahead = self.ahead.less(prompt, stats.gen_tokens)
            self._spent[not planned] += stats.prompt_s + stats.gen_s
        self._live = None
        self._read = None

    # -- what it reports ----------------------------------------------------------------

    def _under_way(self) -> tuple[Timed | None, Ahead]:
        """The call under way as timed so far, and what of the work ahead it has done."""
        if self._live is None:
            return None, Ahead()
        start, prompt, _, planned = self._live
        evaluated = self._read[1] if self._read else prompt
        if self._pieces:
            read_s, write_s = self._first_piece - start, self._last_piece - self._first_piece
            live = Timed(evaluated, read_s, self._pieces - 1, write_s)
            return live, Ahead(prompt, self._pieces) if planned else Ahead()
        if self._read and self._read[0]:  # reading its prompt: timed a batch at a time
            done, total, at = self._read
            live = Timed(done, at - start, 0, 0.0)
            return live, Ahead(prompt * done / total, 0) if planned else Ahead()
        return None, Ahead()

    def eta(self) -> float | None:
        """Seconds left for the whole summary, or None until the rates are measured."""
        live, done = self._under_way()
        calls = [*self.calls, live] if live else self.calls
        if self._first_call is None:
            return None
        now = self.now()
        wall = now - self._first_call
        if self._live is not None and live is None:
            wall -= now - self._live[0]  # a prompt being read is no overhead
        elif self._live is not None and not self._pieces and self._read:
            wall -= now - self._read[2]  # nor is the batch being read now
        evaluated = self._evaluated / self._planned if self._planned else 1.0
        rates = rates_of(calls, wall, min(1.0, evaluated))
        if rates is None:
            return None
        self._rates = rates
        # Calls nobody planned (a sentence written again) go on at the rate seen so far.
        rates = replace(rates, overhead=rates.overhead * (1 + self._unplanned()))
        left = seconds_left(self.ahead.less(done.read, done.write), rates)
        if self._live is not None and live is None:  # its prompt is partly read already
            start, prompt = self._live[:2]
            rest = seconds_left(self.ahead.less(prompt, 0), rates)
            left = max(rest, left - (now - start))
        return left

    def _unplanned(self) -> float:
        """The engine time of unplanned calls per second of planned ones, this run."""
        planned, other = self._spent
        return other / planned if planned > 0 else 0.0

    def _within(self) -> float:
        """Of the step under way, the share done: its call's prompt read and reply
        written, weighed by the time each takes (never going back within a step)."""
        if self._live is None or self._where[0] == "reading":
            return self._floor
        _, prompt, write, _ = self._live
        read_tps, write_tps = (
            (self._rates.read_tps, self._rates.write_tps) if self._rates else (READ_PER_WRITE, 1)
        )
        read = prompt if self._pieces else 0.0
        if self._read and not self._pieces:
            read = prompt * self._read[0] / self._read[1]
        whole = prompt / read_tps + max(write, self._pieces + 1) / write_tps
        share = (read / read_tps + self._pieces / write_tps) / whole
        self._floor = max(self._floor, min(0.95, share))
        return self._floor

    def show(self) -> None:
        stage, done, total, unit = self._where
        eta = self.eta() if stage != "reading" else None
        long = eta is not None and eta > LONG_S and not self._warned
        self._warned |= long
        self._timed |= eta is not None
        self._shown = self.now()
        elapsed = self._shown - self.t0
        within = self._within() if total and done < total else 0.0
        self.report(Progress(stage, done, total, unit, eta, elapsed, long, within))

    def finished(self, stage: str, total: int, unit: str) -> None:
        """The stage is done and nothing is left."""
        self._where = (stage, total, total, unit)
        self.ahead = Ahead()
        self._shown = self.now()
        self.report(Progress(stage, total, total, unit, 0.0, self._shown - self.t0))
