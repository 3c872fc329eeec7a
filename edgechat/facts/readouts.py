"""Live memory readouts: this process's resident memory, system RAM, and GPU memory.

Cheap enough to poll every second beside generation: two psutil reads; the GPU's
memory comes from ``nvidia-smi`` at most every five seconds, and only where an
NVIDIA GPU was found.
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
    vram_used: int | None = None
    vram_total: int | None = None


class Sampler:
    """Call it for a Readout; keeps the GPU query rare and out of the way."""

    def __init__(self, gpu_every_s: float = 5.0) -> None:
        import psutil

        self._psutil = psutil
        self._process = psutil.Process()
        self._smi = shutil.which("nvidia-smi")
        self._gpu_every = gpu_every_s
        self._gpu_at = 0.0
        self._gpu: tuple[int, int] | None = None

    def _vram(self) -> tuple[int, int] | None:
        if not self._smi or time.monotonic() - self._gpu_at < self._gpu_every:
            return self._gpu
        self._gpu_at = time.monotonic()
        try:
            out = subprocess.run(
                [
                    self._smi,
                    "--query-gpu=memory.used,memory.total",
                    "--format=csv,noheader,nounits",
                ],
                capture_output=True,
                text=True,
                timeout=2,
                check=True,
            ).stdout.splitlines()[0]
            used, total = (int(float(x)) * 1024**2 for x in out.split(","))
            self._gpu = (used, total)
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
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
        )
