"""Which of llama.cpp's CPU kernels this machine may trust, remembered per build and CPU.

llama.cpp puts a model's weights in an extra CPU buffer type where one takes them: AMX
on an Intel Xeon with AMX (a native build there compiles it in), CPU_REPACK elsewhere.
A native build of some compilers crashes in the AMX path on the first prompt (llama.cpp
#20824), so each extra type is tried once in a child process (``llama/kernelcheck.py``)
before a model runs on it: it must compute what the plain kernels compute, without
dying. The verdict holds for this build of llama.cpp's CPU library on this CPU, and is
kept in the cache dir until either changes. Read without importing llama_cpp, so
``edgechat device`` and ``doctor`` stay fast.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path

from edgechat.facts.cpuinfo import parse_cpuinfo

AMX, REPACK = "AMX", "CPU_REPACK"
CHOICES = ("auto", "amx", "repack", "plain")  # the cpu_kernels setting (limits.CHOICES)
# Prefer llama.cpp's own choice (more fast paths) unless another set is this much faster:
# timings of a short check drift by a few per cent between runs.
MARGIN = 1.05
TITLES = {AMX: "AMX", REPACK: "repacked weights", "": "plain kernels"}


def title(names) -> str:
    """Kernels in words: 'AMX + repacked weights', 'plain kernels'."""
    return " + ".join(TITLES.get(n, n) for n in names) if names else TITLES[""]


def setting_of(names) -> str:
    """The cpu_kernels value that asks for ``names``: amx, repack or plain."""
    return "amx" if AMX in names else "repack" if names else "plain"


@dataclass(frozen=True)
class Result:
    """One set of extra buffer types as the check ran it."""

    ok: bool
    why: str = ""  # what went wrong: 'crashed (SIGSEGV)', 'hung', 'computed wrong numbers'
    prompt_tps: float | None = None  # prompt tokens/s on the check's model
    gen_tps: float | None = None

    def cost(self) -> float:
        """Seconds for a 128-token prompt and 32 tokens of reply: what the choice weighs."""
        if not (self.prompt_tps and self.gen_tps):
            return float("inf")
        return 128 / self.prompt_tps + 32 / self.gen_tps


@dataclass(frozen=True)
class Verdict:
    key: str  # build and CPU
    checked: str  # ISO date of the check
    available: tuple[str, ...] = ()  # the build's extra types, in llama.cpp's order
    runs: dict[str, Result] = field(default_factory=dict)  # "AMX+CPU_REPACK" -> Result

    def result(self, names) -> Result | None:
        return self.runs.get("+".join(names))

    def passed(self, available) -> tuple[str, ...]:
        """The extra types that ran right alone, in llama.cpp's order."""
        return tuple(n for n in available if (r := self.result((n,))) is not None and r.ok)

    def fastest(self, available) -> tuple[str, ...]:
        """What ``auto`` uses: every type that passed, unless leaving one out (or all)
        was clearly faster in the check."""
        best = self.passed(available)
        candidates = [best, *(tuple(n for n in best if n != x) for x in best), ()]
        for names in candidates[1:]:
            run, top = self.result(names), self.result(best)
            if run is not None and run.ok and (top is None or run.cost() * MARGIN < top.cost()):
                best = names
        return best

    def as_dict(self) -> dict:
        return {
            "checked": self.checked,
            "available": list(self.available),
            "runs": {k: r.__dict__ for k, r in self.runs.items()},
        }


@dataclass(frozen=True)
class Kernels:
    """The extra buffer types a load uses, and why, in one line for device and doctor."""

    names: tuple[str, ...]
    why: str
    warning: str | None = None  # said once, when the choice goes against the check

    @property
    def title(self) -> str:
        return title(self.names)


def _cpu_libs() -> list[Path]:
    spec = importlib.util.find_spec("llama_cpp")
    libs: list[Path] = []
    for folder in (spec.submodule_search_locations or []) if spec else []:
        libs += sorted((Path(folder) / "lib").glob("*ggml-cpu*"))
    return [p for p in libs if p.is_file() and not p.is_symlink()]


@functools.lru_cache(maxsize=1)
def key() -> str:
    """This build of llama.cpp's CPU library on this CPU: a verdict holds until it changes
    (neither does while a process runs, so it is worked out once)."""
    h = hashlib.sha256()
    for lib in _cpu_libs():
        with contextlib.suppress(OSError):
            h.update(lib.read_bytes())
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        import platform

        text = platform.processor() or platform.machine()
    model, _ = parse_cpuinfo(text)
    flags = sorted(
        {
            w
            for line in text.splitlines()
            if line.startswith(("flags", "Features"))
            for w in line.partition(":")[2].split()
        }
    )
    h.update(f"{model}|{' '.join(flags)}".encode())
    return h.hexdigest()[:20]


def store_path() -> Path:
    from edgechat.paths import paths

    return paths().cache_dir / "cpu-kernels.json"


def _parse(entry: dict, k: str) -> Verdict | None:
    try:
        runs = {
            str(name): Result(
                bool(r["ok"]),
                str(r.get("why") or ""),
                float(r["prompt_tps"]) if r.get("prompt_tps") else None,
                float(r["gen_tps"]) if r.get("gen_tps") else None,
            )
            for name, r in entry["runs"].items()
        }
        available = tuple(str(n) for n in entry["available"])
        return Verdict(k, str(entry["checked"]), available, runs)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None  # damaged: check again


def _read_store() -> dict:
    try:
        data = json.loads(store_path().read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def remembered(k: str | None = None) -> Verdict | None:
    """The verdict for this build and CPU, if a check has made one."""
    k = k or key()
    entry = _read_store().get(k)
    return _parse(entry, k) if isinstance(entry, dict) else None


def remember(verdict: Verdict) -> None:
    """Keep ``verdict`` (and the last few of other builds); a store that cannot be written
    only means the check runs again next time."""
    from edgechat.errors import EdgechatError
    from edgechat.paths import write_private

    data = {k: v for k, v in _read_store().items() if k != verdict.key and isinstance(v, dict)}
    data = dict(list(data.items())[-7:]) | {verdict.key: verdict.as_dict()}
    with contextlib.suppress(EdgechatError):
        write_private(store_path(), json.dumps(data, indent=1))


def forget() -> None:
    """Drop the verdict for this build and CPU: the next load checks again."""
    from edgechat.errors import EdgechatError
    from edgechat.paths import write_private

    data = _read_store()
    if data.pop(key(), None) is not None:
        with contextlib.suppress(EdgechatError):
            write_private(store_path(), json.dumps(data, indent=1))


def _failed(verdict: Verdict, name: str) -> str:
    r = verdict.result((name,))
    return f"{r.why} in a check on {verdict.checked}" if r is not None else ""


def choose(setting: str, available: tuple[str, ...], verdict: Verdict | None) -> Kernels:
    """The extra buffer types for ``setting`` (auto | amx | repack | plain) on this build."""
    has_amx = AMX in available
    no_amx = tuple(n for n in available if n != AMX)
    if setting == "plain":
        return Kernels((), "plain kernels, as cpu_kernels = plain asks")
    if setting in ("amx", "repack"):
        names = available if setting == "amx" else no_amx
        why = f"as cpu_kernels = {setting} asks"
        warning = None
        if setting == "amx" and not has_amx:
            warning = "this llama.cpp has no AMX kernels (not built for an AMX CPU); using " + (
                title(names)
            )
        elif verdict is not None:
            bad = [n for n in names if (r := verdict.result((n,))) is not None and not r.ok]
            if bad:
                warning = (
                    f"{title(bad[:1])} {_failed(verdict, bad[0])}; using it anyway, as "
                    f"asked (cpu_kernels {setting})"
                )
        return Kernels(names, why, warning)
    # auto
    if not available:
        return Kernels((), "plain kernels: this llama.cpp has no others for this CPU")
    if verdict is None:  # the check could not run: the path every llama.cpp CPU user runs
        names = (REPACK,) if REPACK in available else ()
        return Kernels(names, "not checked on this machine yet" + (", AMX left out" * has_amx))
    names = verdict.fastest(available)
    notes = []
    for n in available:
        r = verdict.result((n,))
        if r is not None and not r.ok:
            notes.append(f"{title((n,))} skipped: it {_failed(verdict, n)}")
        elif n not in names and r is not None:
            notes.append(f"{title((n,))} skipped: slower in a check on {verdict.checked}")
    if not notes:
        notes.append(f"passed a check on {verdict.checked}")
    return Kernels(names, "; ".join(notes))


def repacks(setting: str) -> bool:
    """Whether a load with ``setting`` keeps llama.cpp's repacked weights (a copy the memory
    estimate counts): not when the check found plain kernels faster or a user asked for
    them. Before any check, auto keeps them, as a first load does."""
    if setting == "plain":
        return False
    chosen = current(setting)
    return chosen is None or REPACK in chosen.names


def current(setting: str) -> Kernels | None:
    """What a load would use now for ``setting``, from the remembered verdict; None when
    no check has run for this build and CPU (the next load runs it)."""
    verdict = remembered()
    if verdict is None:
        return None
    return choose(setting, verdict.available, verdict)
