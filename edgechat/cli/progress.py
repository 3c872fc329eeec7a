"""The CLI's one renderer of long work on stderr: a bar (tqdm) redrawn in place on a
terminal; on a pipe or in a log, a plain line at each stage, each tenth and at least
every 30 seconds, so a log stays short and readable. Summaries, calibration, shrink,
benchmarks, quality runs and quantising all report through it; downloads use tqdm's own
byte bars (cli/models.py). Times are h:mm:ss everywhere (tasks/progress.clock)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from edgechat.tasks.progress import clock


class Bar:
    """``bar(fraction, words)``: ``fraction`` of the work done (None: not known yet),
    ``words`` what is happening ('summarising 3/12 chunks · about 0:01:23 left')."""

    def __init__(self, label: str = "") -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self._bar = None
        self._last: tuple[str, int] | None = None
        self._at = 0.0  # when the last line was written (a pipe gets one every 30 s)

    def __call__(self, fraction: float | None, words: str, final: bool = False) -> None:
        if self.tty:
            self._draw(fraction, words)
        else:
            key = (words.split(" ", 1)[0], int(10 * fraction) if fraction is not None else -1)
            now = time.monotonic()
            if key != self._last or final or now - self._at >= 30:
                self._last, self._at = key, now
                sys.stderr.write(f"{self.label}{words}\n")
                sys.stderr.flush()
        if final:
            self.close()

    def _draw(self, fraction: float | None, words: str) -> None:
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(
                total=1000,
                file=sys.stderr,
                leave=False,
                dynamic_ncols=True,
                bar_format="{percentage:3.0f}% |{bar:20}| {desc}",  # the words after the bar
            )
        self._bar.set_description_str(self.label + words, refresh=False)
        self._bar.n = round(1000 * min(1.0, fraction)) if fraction is not None else 0
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()  # leave=False: the line is cleared for what follows
            self._bar = None


def left(seconds: float | None) -> str:
    return "" if seconds is None else f" · about {clock(seconds)} left"


def counter(what: str) -> Callable[..., None]:
    """``show(i, n, seconds_left=None)``: ``what i/n`` (tensors, runs, chunks) through
    the one renderer, with the time left when the work knows it."""
    bar = Bar()

    def show(i: int, n: int, seconds_left: float | None = None) -> None:
        tail = left(seconds_left) if i < n else ""
        bar(i / max(n, 1), f"{what} {i}/{n}{tail}", final=i >= n)

    return show


def summary(label: str = "") -> Callable:
    """A summary's progress (tasks.progress.Progress): the bar, and once, as soon as a
    run is found to be long, the warning with its estimate."""
    bar = Bar(label)

    def show(p) -> None:
        warning = p.warning()
        if warning:
            bar.close()
            sys.stderr.write(f"edgechat: {label}{warning}; Ctrl-C stops it\n")
        done = p.stage == "writing" and p.total and p.done >= p.total
        bar(p.bar, p.line(), final=bool(done))

    return show
