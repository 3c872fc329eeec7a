"""A server's thread count, following the cores other programs leave free while it runs.

planning/threads.py chooses the count once, as a model loads. A server runs for days
while the machine around it gets busy and quiet again, and one llama.cpp thread on a
taken core makes every decode wait (on two cores both busy elsewhere, SmolLM2 decoded
a token in 0.1-5 s on two threads against 0.03-0.1 on one, p10-p90). llama.cpp takes
a new count between any two decodes (``llama_set_n_threads``), so the server's llama
thread asks this policy before each decode (``before``) and tells it what the decode
cost (``after``). Two measures, no guesses:

- the CPU time other programs used on this process's cores (threads.py's
  ``OthersBusy``), read every half second while decoding and over each pause: the free
  cores (``choose``, the rule used at load) are the most threads it runs. A pause's
  reading is clean (the server used no CPU), so each busy period starts on it; while
  decoding, a reading that finds fewer free cores than threads cuts the count at once
  (a thread on a taken core costs far more than a thread too few), and one that finds
  a third of a core more of their work than the last brings the next trial of fewer
  threads forward (beside the server's threads the others get less than they would
  take, so a reading can find a core free that is not).
- the decodes' own times: a trial runs four decodes on another count and keeps it when
  they took 5 % less time than the last ones on the current count with as many tokens
  (a prompt's chunks are not compared). One thread fewer is tried every 2 s; more, up
  to the free cores, when a reading finds cores came free, after a wait that doubles
  with each trial lost (1 s to 60 s). A trial of more threads ends at its first decode
  1.5 times slower than the reference, and a count gained that way goes back unless
  its next 12 decodes still beat the old count's. Trials take at most 2 % of the time.

Not thread-safe: the llama thread alone calls ``before``, ``after`` and ``pause``;
``threads`` and ``why`` may be read from any thread.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from edgechat.planning.threads import choose

READ_EVERY = 0.5  # s between readings of other programs' CPU time while decoding
PAUSE_S = 0.5  # a gap between decodes this long starts a new busy period
DOWN_EVERY = 2.0  # s between trials of one thread fewer
UP_WAIT = (1.0, 60.0)  # s before a trial of more threads: after a loss, doubled up to the last
TRIAL_STEPS = 4  # comparable decodes a trial runs
TRIAL_MAX = 16  # decodes a trial may run in all (others than comparable ones included)
REFERENCE = 6  # the current count's last comparable decodes kept
REFERENCE_AGE = 2.0  # s: older ones no longer describe the machine
MARGIN = 0.05  # a trial wins by this much less time
ABORT = 1.5  # a trial of more threads ends at a decode this many times the reference
PROBATION = 12  # decodes a count gained by a trial of more threads must still win
TRIAL_SHARE = 0.02  # the most of the time trials take
RISE = 0.33  # cores' worth of other programs' work more than at the last reading


@dataclass
class _Trial:
    threads: int  # the count tried (for a probation: the count to go back to)
    base: float  # the median time of the reference decodes
    key: int  # their tokens: only decodes of as many are compared
    up: bool
    began: float
    times: list[float] = field(default_factory=list)
    runs: int = 0


class ThreadFollower:
    """The thread count for a server's next decode; ``others`` reads other programs' CPU
    use since its last call, in cores (None: unknown); ``clock`` is for tests."""

    def __init__(
        self,
        usable: int,
        threads: int,
        others: Callable[[], float | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        why: str = "",
    ) -> None:
        self.usable = max(1, usable)
        self.threads = max(1, min(threads, self.usable))  # the settled count
        self.why = why or f"{self.threads} of {self.usable} usable cores"
        self.changes = 0
        self._others, self._clock = others, clock
        now = clock()
        self._ref: deque[tuple[int, float, float]] = deque(maxlen=REFERENCE)
        self._trial: _Trial | None = None
        self._probation: _Trial | None = None
        self._last: float | None = None  # when the last decode ended (None: none yet)
        self._read_at = now
        self._free = self.usable  # at the last reading
        self._seen = self.why  # what the last reading found
        self._busy = 0.0  # the cores' worth of other programs' work it found
        self._down_at = now + DOWN_EVERY
        self._up_wait = UP_WAIT[0]
        self._up_at = now

    # -- the llama thread ----------------------------------------------------------------

    def before(self) -> int:
        """The thread count for the next decode."""
        now = self._clock()
        if self._last is None or now - self._last >= PAUSE_S:
            self._begin(now)
        elif self._trial is None and now - self._read_at >= READ_EVERY:
            self._reading(now)
        if self._trial is None and self._probation is None:
            self._maybe_try(now)
        return self._trial.threads if self._trial else self.threads

    def after(self, tokens: int, prompt: int, seconds: float) -> None:
        """The decode just run: its tokens, how many of them a prompt's, and its time."""
        now = self._last = self._clock()
        trial = self._trial
        comparable = not prompt
        if trial is None:
            if comparable:
                self._ref.append((tokens, seconds, now))
                if self._probation is not None:
                    self._on_probation(tokens, seconds, now)
            return
        trial.runs += 1
        if comparable and tokens == trial.key:
            trial.times.append(seconds)
            if trial.up and seconds > trial.base * ABORT:
                return self._conclude(now, False)
            if len(trial.times) >= TRIAL_STEPS:
                won = statistics.median(trial.times) < trial.base * (1 - MARGIN)
                return self._conclude(now, won)
        if trial.runs >= TRIAL_MAX:
            self._conclude(now, None)  # too few comparable decodes: no verdict

    def pause(self) -> None:
        """No decode is due: read what other programs used until now, so that the next
        busy period starts on a reading of the pause alone."""
        now = self._clock()
        if now - self._read_at >= 0.1:
            self._reading(now)

    # -- inside --------------------------------------------------------------------------

    def _read(self, now: float) -> int | None:
        """The free cores since the last reading (None: unknown); other programs' work
        grown by ``RISE`` brings the next trial of fewer threads forward."""
        self._read_at = now
        busy = self._others() if self._others is not None else None
        if busy is None:
            return None
        if busy >= self._busy + RISE:
            self._down_at = min(self._down_at, now)
        self._busy = busy
        choice = choose(self.usable, busy)
        self._seen = choice.why
        return choice.threads

    def _set(self, threads: int, why: str) -> None:
        if threads != self.threads:
            self.changes += 1
            self._ref.clear()
        self.threads, self.why = threads, why

    def _begin(self, now: float) -> None:
        """A busy period begins: the pause's reading is the count."""
        self._trial = self._probation = None
        free = self._read(now)
        if free is not None:
            self._free = free
            self._set(free, self._seen)
        self._down_at = now + DOWN_EVERY
        self._last = now

    def _reading(self, now: float) -> None:
        free = self._read(now)
        if free is None:
            return
        if free > self._free:  # cores came free: try them soon
            self._up_wait, self._up_at = UP_WAIT[0], min(self._up_at, now)
        self._free = free
        if free < self.threads:
            self._probation = None
        if free <= self.threads:  # the free cores set the count: say what they were
            self._set(free, self._seen)

    def _maybe_try(self, now: float) -> None:
        if not self._ref:
            return
        key = self._ref[-1][0]
        same = [s for k, s, t in self._ref if k == key and now - t <= REFERENCE_AGE]
        if len(same) < 3:
            return
        if self.threads < self._free and now >= self._up_at:
            candidate = self._free
        elif self.threads > 1 and now >= self._down_at:
            candidate = self.threads - 1
        else:
            return
        up = candidate > self.threads
        self._trial = _Trial(candidate, statistics.median(same), key, up, now)

    def _conclude(self, now: float, won: bool | None) -> None:
        trial, self._trial = self._trial, None
        spent = now - trial.began
        if won:
            old = self.threads
            ratio = trial.base / statistics.median(trial.times)
            self._set(
                trial.threads,
                f"{trial.threads} of {self.usable} usable cores: measured {ratio:.2f}x "
                f"as fast as {old}",
            )
            self._ref.extend((trial.key, s, now) for s in trial.times)
            if trial.up:  # it must go on winning
                self._probation = _Trial(old, trial.base, trial.key, False, now)
        elif trial.up:
            if won is False:
                self._up_wait = min(UP_WAIT[1], 2 * self._up_wait)
            self._up_at = now + max(self._up_wait, spent / TRIAL_SHARE)
        self._down_at = now + max(DOWN_EVERY, spent / TRIAL_SHARE)

    def _on_probation(self, tokens: int, seconds: float, now: float) -> None:
        probation = self._probation
        probation.runs += 1
        if tokens == probation.key:
            probation.times.append(seconds)
        if len(probation.times) < PROBATION:
            if probation.runs >= 3 * PROBATION:
                self._probation = None  # the load changed shape: no verdict, keep it
            return
        self._probation = None
        if statistics.median(probation.times) < probation.base:
            self._up_wait = UP_WAIT[0]
            return
        ratio = probation.base / statistics.median(probation.times)
        self._set(
            probation.threads,
            f"{probation.threads} of {self.usable} usable cores: {self.threads} ran only "
            f"{ratio:.2f}x as fast over {PROBATION} decodes",
        )
        self._up_wait = min(UP_WAIT[1], 2 * self._up_wait)
        self._up_at = now + self._up_wait
