"""How many threads llama.cpp runs on: one per core this process may use that no other
program is busy on.

llama.cpp's threads meet at a barrier after every step of a token and spin while they
wait, so one thread on a core that something else holds slows all of them: on two
cores with one busy elsewhere, two threads ran SmolLM2 at 33 tok/s against 72 for one
(idle: 123 against 82), and with both busy two threads fell to 1-4 tok/s where one ran
at 47-66. So the default is decided when a model loads, from the cores the process
may use (affinity mask, cgroup CPU quota) less those other programs kept busy while it
loaded (per-CPU time, sampled over the load itself, this process's own time taken
out). Nothing here runs at start-up or for ``--help``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

# A core counts as taken when other programs kept it this busy during the sample.
BUSY_CORE = 0.65
# The shortest sample worth reading; a load faster than this waits out the rest.
MIN_SAMPLE_S = 0.1
# A reply below this share of the estimate, with more than one thread, is told to try fewer.
SLOW_SHARE = 1 / 3
SLOW_MIN_TOKENS = 16


def usable_cores() -> int:
    """Cores this process may run on: physical cores (llama.cpp generates fastest with one
    thread per physical core), cut to the affinity mask and the cgroup's CPU quota.
    Cheap (a few small files): the app reads it at start-up."""
    from edgechat.facts.cgroup import read_limits

    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except Exception:  # psutil can fail in odd containers; fall back below
        n = None
    cores = n or os.cpu_count() or 1
    return max(1, read_limits().usable_cores(cores) or cores)


@dataclass(frozen=True)
class ThreadChoice:
    """The default thread count and why."""

    threads: int
    usable: int  # cores this process may use
    busy: float | None  # cores' worth of other programs' work while the model loaded

    @property
    def why(self) -> str:
        if self.busy is None or self.threads == self.usable:
            return f"{self.threads} of {self.usable} usable cores"
        return (
            f"{self.threads} of {self.usable} usable cores: other programs kept "
            f"{self.busy:.1f} busy"
        )


def choose(usable: int, busy: float | None) -> ThreadChoice:
    """One thread per usable core, less the cores other programs keep busy; at least one."""
    taken = int(busy + (1 - BUSY_CORE)) if busy else 0
    return ThreadChoice(max(1, usable - taken), usable, busy)


class OthersBusy:
    """Cores' worth of the work other programs did on this process's CPUs between two
    reads: the CPU time those CPUs spent busy, less this process's own. Cheap (two small
    /proc reads): a server reads it while it runs (planning/follow.py)."""

    def __init__(self) -> None:
        self._cpus = _allowed_cpus()
        self._last = self._now()

    def _now(self) -> tuple[float, float | None, float | None]:
        return time.monotonic(), _busy_seconds(self._cpus), _own_seconds()

    def read(self) -> float | None:
        """Since the last read (or the start); None where the counters cannot be read."""
        (t0, busy0, mine0), (t1, busy1, mine1) = self._last, self._now()
        self._last = t1, busy1, mine1
        if busy0 is None or busy1 is None or mine0 is None or mine1 is None or t1 <= t0:
            return None
        others = (busy1 - busy0) - (mine1 - mine0)
        return round(max(0.0, others / (t1 - t0)), 2)


class LoadSample:
    """The CPU time spent on this process's CPUs between ``start`` and ``busy_elsewhere``,
    less this process's own: what other programs used meanwhile, in cores."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self._others = OthersBusy()

    def busy_elsewhere(self) -> float | None:
        """Cores' worth of other programs' work since the sample began (None: unknown)."""
        wait = MIN_SAMPLE_S - (time.monotonic() - self._t0)
        if wait > 0:
            time.sleep(wait)
        busy = self._others.read()
        if busy is None:  # no per-CPU times: the load average, ours included
            return _load_average_elsewhere(len(self._others._cpus or []) or None)
        return busy


def default_threads(sample: LoadSample | None = None) -> ThreadChoice:
    """The thread count to load with: ``sample`` (begun before the model loaded) says how
    busy the cores were meanwhile; without one, the cores are taken as free."""
    busy = sample.busy_elsewhere() if sample is not None else None
    return choose(usable_cores(), busy)


def slow_hint(
    gen_tps: float, gen_tokens: int, expected_tps: float | None, threads: int
) -> tuple[str, int] | None:
    """When a reply ran far below the speed estimate on more than one thread (other
    programs on the cores make llama.cpp's threads wait): what happened, and the thread
    count to try. None when it did not, or there is too little to tell."""
    if threads <= 1 or not expected_tps or gen_tokens < SLOW_MIN_TOKENS:
        return None
    if gen_tps >= expected_tps * SLOW_SHARE:
        return None
    said = (
        f"this reply ran at {gen_tps:.1f} tok/s, far below the ~{expected_tps:.0f} expected "
        f"here on {threads} threads: other programs may be busy on these cores"
    )
    return said, max(1, threads // 2)


# -- counters --------------------------------------------------------------------------------


def _allowed_cpus() -> list[int] | None:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _busy_seconds(cpus: list[int] | None) -> float | None:
    """Seconds the given CPUs (all, for None) spent not idle since boot."""
    try:
        import psutil

        per_cpu = psutil.cpu_times(percpu=True)
    except Exception:
        return None
    chosen = [per_cpu[i] for i in cpus if i < len(per_cpu)] if cpus else per_cpu
    total = 0.0
    for t in chosen:
        idle = t.idle + getattr(t, "iowait", 0.0)
        total += sum(t) - idle - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    return total


def _own_seconds() -> float | None:
    try:
        import psutil

        t = psutil.Process().cpu_times()
    except Exception:
        return None
    return t.user + t.system


def _load_average_elsewhere(cpus: int | None) -> float | None:
    """Where per-CPU times cannot be read: the 1-minute load average (ours included)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    return round(min(load, cpus or load), 2)
