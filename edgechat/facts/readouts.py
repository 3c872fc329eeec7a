"""Live memory readouts: this process's resident memory, system RAM, and GPU memory.

Cheap enough to poll every second beside generation: two psutil reads; the GPU's
memory comes from ``nvidia-smi`` at most every five seconds, and only where an
NVIDIA GPU was found: this process's share (``--query-compute-apps``) beside the
whole GPU's, since a desktop GPU is shared with the display and other programs.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Readout:
    rss: int  # this process, bytes
    ram_used: int
    ram_available: int
    ram_total: int
    vram_used: int | None = None  # the whole GPU
    vram_total: int | None = None
    vram_process: int | None = None  # this process's share, where the driver says


_MiB = 1024**2


def parse_gpu_memory(text: str) -> tuple[int, int] | None:
    """``nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader,nounits``
    (MiB, one line per GPU): the first GPU's (used, total) in bytes."""
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) >= 2 and all(f.replace(".", "", 1).isdigit() for f in fields[:2]):
            return int(float(fields[0])) * _MiB, int(float(fields[1])) * _MiB
    return None


def parse_compute_apps(text: str, pid: int) -> int | None:
    """``nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits``:
    the VRAM ``pid`` holds, in bytes (summed over GPUs); None when it holds none or the
    driver does not say (``[N/A]`` under Windows' WDDM)."""
    total, seen = 0, False
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 2 or fields[0] != str(pid):
            continue
        if not fields[1].replace(".", "", 1).isdigit():
            return None
        total += int(float(fields[1])) * _MiB
        seen = True
    return total if seen else None


class Sampler:
    """Call it for a Readout; keeps the GPU query rare and out of the way."""

    def __init__(self, gpu_every_s: float = 5.0) -> None:
        import psutil

        self._psutil = psutil
        self._process = psutil.Process()
        self._smi = shutil.which("nvidia-smi")
        self._gpu_every = gpu_every_s
        self._gpu_at = 0.0
        self._gpu: tuple[int, int, int | None] | None = None
        self._pid = self._process.pid

    def _query(self, what: str) -> str:
        return subprocess.run(
            [self._smi, f"--query-{what}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=2,
            check=True,
        ).stdout

    def _vram(self) -> tuple[int, int, int | None] | None:
        if not self._smi or time.monotonic() - self._gpu_at < self._gpu_every:
            return self._gpu
        self._gpu_at = time.monotonic()
        try:
            gpu = parse_gpu_memory(self._query("gpu=memory.used,memory.total"))
            mine = parse_compute_apps(self._query("compute-apps=pid,used_memory"), self._pid)
            self._gpu = (*gpu, mine) if gpu else None
        except (OSError, subprocess.SubprocessError):
            self._smi = None  # stop asking a tool that does not answer
        return self._gpu

    def __call__(self) -> Readout:
        vm = self._psutil.virtual_memory()
        gpu = self._vram()
        return Readout(
            rss=self._process.memory_info().rss,
            ram_used=vm.total - vm.available,
            ram_available=vm.available,
            ram_total=vm.total,
            vram_used=gpu[0] if gpu else None,
            vram_total=gpu[1] if gpu else None,
            vram_process=gpu[2] if gpu else None,
        )
