"""What this process may use, which can be less than the machine has: the memory and CPU
limits of its control groups (Docker, Kubernetes, systemd's ``MemoryMax=``/``CPUQuota=``)
and its CPU affinity mask (``taskset``, cpusets).

A container sees the host's RAM and cores in /proc/meminfo and /proc/cpuinfo, so a plan
made from them is killed by the OOM killer or throttled. The limits live in the cgroup
files of the process's group and of every group above it; the smallest wins. Both
hierarchies are read (v2, and v1 as on older Docker hosts and hybrid systemd setups).
Everything is read below ``root`` so tests can feed a recorded tree; nothing raises:
what cannot be read is no limit.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# v1 writes "no limit" as the largest page-aligned signed 64-bit number; anything this
# large is no limit in practice.
_UNLIMITED = 1 << 60


@dataclass(frozen=True)
class Limits:
    """The limits that bind this process; None where none applies."""

    memory_max: int | None = None  # bytes: the group is killed above this
    memory_high: int | None = None  # bytes (v2): the group is throttled above this
    memory_used: int | None = None  # charged to the binding group now, less idle file cache
    memory_group: str | None = None  # which file set the memory limit
    cpu_quota: float | None = None  # CPUs' worth of time per period
    cpu_group: str | None = None  # which file set it
    cpus_allowed: int | None = None  # CPUs in the affinity mask

    @property
    def memory(self) -> int | None:
        """The most this process may plan to use: the lower of the hard and throttle limits."""
        found = [m for m in (self.memory_max, self.memory_high) if m is not None]
        return min(found) if found else None

    @property
    def memory_free(self) -> int | None:
        """What is left under the limit."""
        if self.memory is None:
            return None
        return max(0, self.memory - (self.memory_used or 0))

    def usable_cores(self, cores: int | None) -> int | None:
        """``cores`` (the machine's) cut to the affinity mask and the CPU quota."""
        found = [c for c in (cores, self.cpus_allowed) if c]
        if self.cpu_quota is not None:
            found.append(max(1, math.floor(self.cpu_quota + 0.01)))  # 1.5 CPUs: one thread
        return min(found) if found else None

    def within(self, total: int | None, available: int | None) -> tuple[int | None, int | None]:
        """The host's (total, available) RAM as this process sees it under its limit."""
        if self.memory is None:
            return total, available
        free = self.memory_free
        return (
            min(total, self.memory) if total is not None else self.memory,
            min(available, free) if available is not None else free,
        )


# -- parsers (pure) ---------------------------------------------------------------------


def parse_proc_cgroup(text: str) -> list[tuple[set[str], str]]:
    """/proc/PID/cgroup: (controllers, path) per hierarchy; v2's line has no controllers."""
    groups = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[2].startswith("/"):
            groups.append(({c for c in parts[1].split(",") if c}, parts[2]))
    return groups


def parse_mountinfo(text: str) -> list[tuple[str, str, str, set[str]]]:
    """/proc/PID/mountinfo: (root, mount point, type, super options) of cgroup mounts."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 10:
            continue
        tail = line.split(" - ", 1)[1].split()
        if len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        root, point = _unescape(fields[3]), _unescape(fields[4])
        mounts.append((root, point, tail[0], set(tail[2].split(","))))
    return mounts


def _unescape(field: str) -> str:
    """mountinfo writes a space in a path as \\040 (and tab, newline, backslash likewise)."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def parse_bytes(text: str | None) -> int | None:
    """memory.max / memory.high / memory.limit_in_bytes: a number, or 'max' (none)."""
    if text is None or not text.strip().isdigit():
        return None
    value = int(text.strip())
    return value if value < _UNLIMITED else None


def parse_cpu_max(text: str | None) -> float | None:
    """v2 cpu.max: 'QUOTA PERIOD' in microseconds, or 'max PERIOD' (none)."""
    parts = (text or "").split()
    if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    return int(parts[0]) / int(parts[1]) if int(parts[1]) else None


def parse_cfs(quota: str | None, period: str | None) -> float | None:
    """v1 cpu.cfs_quota_us / cpu.cfs_period_us; a quota of -1 is none."""
    try:
        q, p = int((quota or "").strip()), int((period or "").strip())
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def parse_stat(text: str | None, key: str) -> int:
    """One counter of memory.stat (0 when absent)."""
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


# -- the tree ---------------------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _folders(root: Path, mount: tuple[str, str, str, set[str]], path: str) -> list[Path]:
    """The process's group folder under a mount, then each ancestor up to the mount."""
    mount_root, point = mount[0], mount[1]
    rel = PurePosixPath(path)
    try:  # a container without a cgroup namespace: its own group is the mount's root
        rel = rel.relative_to(mount_root)
    except ValueError:
        rel = rel.relative_to("/")
    base = root / point.lstrip("/")
    parts = [p for p in rel.parts if p not in ("/", "..", ".")]
    return [base.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _groups(root: Path, pid: str) -> list[tuple[str, set[str], list[Path]]]:
    """(version, controllers, folders from the process's group up) per hierarchy."""
    proc = root / "proc" / pid
    mounts = parse_mountinfo(_read(proc / "mountinfo") or "")
    found = []
    for controllers, path in parse_proc_cgroup(_read(proc / "cgroup") or ""):
        for mount in mounts:
            v2 = mount[2] == "cgroup2"
            if (not controllers and v2) or (controllers and controllers <= mount[3] and not v2):
                found.append(("v2" if v2 else "v1", controllers, _folders(root, mount, path)))
                break
    return found


def _smallest(
    found: list[tuple[int | float, Path, str]],
) -> tuple[int | float | None, Path | None, str | None]:
    if not found:
        return None, None, None
    return min(found, key=lambda f: f[0])


def read_limits(root: Path = Path("/"), pid: str = "self", affinity: bool = True) -> Limits:
    """The limits on process ``pid`` as the files under ``root`` say (``affinity``: also
    this process's CPU mask, which only the kernel can tell)."""
    memory: list[tuple[int | float, Path, str]] = []
    high: list[tuple[int | float, Path, str]] = []
    cpu: list[tuple[int | float, Path, str]] = []
    for version, controllers, folders in _groups(Path(root), pid):
        for folder in folders:
            if version == "v2":
                for name, into in (("memory.max", memory), ("memory.high", high)):
                    value = parse_bytes(_read(folder / name))
                    if value is not None:
                        into.append((value, folder, name))
                quota = parse_cpu_max(_read(folder / "cpu.max"))
                if quota is not None:
                    cpu.append((quota, folder, "cpu.max"))
            if version == "v1" and "memory" in controllers:
                value = parse_bytes(_read(folder / "memory.limit_in_bytes"))
                if value is not None:
                    memory.append((value, folder, "memory.limit_in_bytes"))
            if version == "v1" and "cpu" in controllers:
                quota = parse_cfs(
                    _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
                )
                if quota is not None:
                    cpu.append((quota, folder, "cpu.cfs_quota_us"))
    mem_max, mem_folder, mem_file = _smallest(memory)
    mem_high, high_folder, high_file = _smallest(high)
    if mem_high is not None and (mem_max is None or mem_high < mem_max):
        binding, binding_file = high_folder, high_file
    else:
        binding, binding_file = mem_folder, mem_file
    quota, cpu_folder, cpu_file = _smallest(cpu)
    return Limits(
        memory_max=int(mem_max) if mem_max is not None else None,
        memory_high=int(mem_high) if mem_high is not None else None,
        memory_used=_used(binding) if binding else None,
        memory_group=_name(root, binding, binding_file),
        cpu_quota=round(float(quota), 3) if quota is not None else None,
        cpu_group=_name(root, cpu_folder, cpu_file),
        cpus_allowed=_affinity() if affinity else None,
    )


def _used(folder: Path) -> int | None:
    """What the group holds now, less the file cache it could drop at once (as Docker
    and Kubernetes count a container's working set)."""
    usage = parse_bytes(_read(folder / "memory.current") or _read(folder / "memory.usage_in_bytes"))
    if usage is None:
        return None
    stat = _read(folder / "memory.stat")
    idle = parse_stat(stat, "inactive_file") or parse_stat(stat, "total_inactive_file")
    return max(0, usage - idle)


def _name(root: Path, folder: Path | None, file: str | None) -> str | None:
    if folder is None or file is None:
        return None
    return "/" + str((folder / file).relative_to(root)).lstrip("/")


def _affinity() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity mask to read
        return None
