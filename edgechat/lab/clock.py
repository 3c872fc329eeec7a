"""The ETA of a run made of stages of a few kinds (a pass of the source over the text,
a quantisation, a speed test ...): each kind's seconds per unit, learnt as the run goes,
times the units left."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Stage:
    label: str
    kind: str
    units: float  # chunks for a pass over the text, 1 for the rest


class Clock:
    def __init__(self, stages: list[Stage], guesses: dict[str, float]) -> None:
        self.stages = stages
        self.rate = dict(guesses)  # kind -> seconds per unit
        self._seen: dict[str, tuple[float, float]] = {}  # kind -> (seconds, units) so far
        self.index = -1
        self._started = 0.0
        self._fraction = 0.0

    @property
    def stage(self) -> Stage:
        return self.stages[self.index]

    def start(self, index: int) -> Stage:
        self.index, self._started, self._fraction = index, time.monotonic(), 0.0
        return self.stages[index]

    def advance(self, done: int, total: int) -> None:
        """Part of the current stage is done: its rate so far replaces the guess."""
        self._fraction = done / total if total else 0.0
        if self._fraction > 0:
            stage = self.stage
            elapsed = time.monotonic() - self._started
            seconds, units = self._seen.get(stage.kind, (0.0, 0.0))
            self.rate[stage.kind] = (seconds + elapsed) / (units + stage.units * self._fraction)

    def finish(self) -> None:
        stage = self.stage
        seconds, units = self._seen.get(stage.kind, (0.0, 0.0))
        self._seen[stage.kind] = (seconds + time.monotonic() - self._started, units + stage.units)
        s, u = self._seen[stage.kind]
        if u:
            self.rate[stage.kind] = s / u
        self._fraction = 1.0

    def eta(self) -> float:
        """Seconds left for the whole run, at the rates known now."""
        if self.index < 0:
            rest = self.stages
            current = 0.0
        else:
            stage = self.stage
            current = stage.units * self.rate.get(stage.kind, 0.0) * (1 - self._fraction)
            rest = self.stages[self.index + 1 :]
        return current + sum(s.units * self.rate.get(s.kind, 0.0) for s in rest)
