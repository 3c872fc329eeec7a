"""One progress model for a summary, shown as it is by the CLI and by the app.

Three stages, named the same everywhere: ``reading`` (the document read and cut into
chunks, measured in bytes from the start), ``summarising`` (a partial summary of each
chunk) and ``writing`` (the summary written, in parts). The time left is the work still
ahead in tokens (prompt tokens to evaluate, tokens to generate) at the rates this run has
measured, the call under way included, times what the run spends around llama.cpp; it is
re-costed at every report, so it converges as the rates settle. The first time the run
is found to need more than ``LONG_S`` it says so, once, with the estimate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgechat.llama.reply import Stats

STAGES = ("reading", "summarising", "writing")
LONG_S = 600.0  # a summary longer than this is announced with its estimate
MIN_INTERVALS = 8  # generated tokens timed before a writing rate is trusted
EVERY_S = 0.5  # reports while a reply is being written, at most this often


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
    """The rates these calls show, or None until there is enough to go on: a prompt timed
    and ``MIN_INTERVALS`` generated tokens. ``wall_s``: the time since the first call
    started, of which the calls' own time is the engine's share."""
    read = sum(c.read for c in calls)
    read_s = sum(c.read_s for c in calls if c.read)
    intervals = sum(c.intervals for c in calls)
    write_s = sum(c.write_s for c in calls if c.intervals)
    if read <= 0 or read_s <= 0 or intervals < MIN_INTERVALS or write_s <= 0:
        return None
    engine_s = sum(c.read_s + c.write_s for c in calls)
    return Rates(read / read_s, intervals / write_s, max(1.0, wall_s / engine_s), evaluated)


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

    @property
    def bar(self) -> float | None:
        """How full this stage's bar is (None: not known, a pipe's bytes)."""
        return min(1.0, self.done / self.total) if self.total else None

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
        self._live: tuple[float, int] | None = None  # the call under way: start, its prompt
        self._first_piece = self._last_piece = 0.0
        self._pieces = 0
        self._shown = -1e9
        self._warned = False

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
        self.show()

    def started(self, prompt: int) -> None:
        """A call starts, with about ``prompt`` tokens of prompt to evaluate."""
        t = self.now()
        self._first_call = t if self._first_call is None else self._first_call
        self._live = (t, prompt)
        self._pieces = 0

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
            self.calls.append(Timed.of(stats))
            self._planned += self._live[1]
            self._evaluated += stats.prompt_eval_tokens
            self.ahead = self.ahead.less(self._live[1], stats.gen_tokens)
        self._live = None

    # -- what it reports ----------------------------------------------------------------

    def _under_way(self) -> tuple[Timed | None, Ahead]:
        """The call under way as timed so far, and what of the work ahead it has done."""
        if self._live is None:
            return None, Ahead()
        start, prompt = self._live
        if not self._pieces:  # still reading its prompt: nothing to time yet
            return None, Ahead()
        read_s = self._first_piece - start
        live = Timed(prompt, read_s, self._pieces - 1, self._last_piece - self._first_piece)
        return live, Ahead(prompt, self._pieces)

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
        evaluated = self._evaluated / self._planned if self._planned else 1.0
        rates = rates_of(calls, wall, min(1.0, evaluated))
        if rates is None:
            return None
        left = seconds_left(self.ahead.less(done.read, done.write), rates)
        if self._live is not None and live is None:  # its prompt is partly read already
            start, prompt = self._live
            rest = seconds_left(self.ahead.less(prompt, 0), rates)
            left = max(rest, left - (now - start))
        return left

    def show(self) -> None:
        stage, done, total, unit = self._where
        eta = self.eta() if stage != "reading" else None
        long = eta is not None and eta > LONG_S and not self._warned
        self._warned |= long
        self._shown = self.now()
        self.report(Progress(stage, done, total, unit, eta, self._shown - self.t0, long))

    def finished(self, stage: str, total: int, unit: str) -> None:
        """The stage is done and nothing is left."""
        self._where = (stage, total, total, unit)
        self.ahead = Ahead()
        self._shown = self.now()
        self.report(Progress(stage, total, total, unit, 0.0, self._shown - self.t0))
