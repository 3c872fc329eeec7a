"""The VRAM readout from nvidia-smi output recorded on the H100 (tests/data/gpu/).

``nvidia_smi_used_h100.csv`` is the H100's idle ``--query-gpu=memory.used,memory.total``;
``nvidia_smi_compute_apps_sample.csv`` is written in ``--query-compute-apps=pid,used_memory``
format (the record has no process list: the GPU was idle), with two processes.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from edgechat.facts.readouts import Readout, Sampler, parse_compute_apps, parse_gpu_memory
from edgechat.tui.chat import vram_text

DATA = Path(__file__).parent / "data" / "gpu"
MiB = 2**20


def test_parse_recorded_gpu_memory_and_compute_apps():
    used, total = parse_gpu_memory((DATA / "nvidia_smi_used_h100.csv").read_text())
    assert (used, total) == (0, 81559 * MiB)
    apps = (DATA / "nvidia_smi_compute_apps_sample.csv").read_text()
    assert parse_compute_apps(apps, 4112) == 1757 * MiB
    assert parse_compute_apps(apps, 5120) == 870 * MiB
    assert parse_compute_apps(apps, 999) is None  # not on the GPU
    assert parse_compute_apps("", 4112) is None  # no process: nvidia-smi prints nothing
    assert parse_compute_apps("4112, [N/A]\n", 4112) is None  # WDDM does not say
    assert parse_compute_apps("4112, 100\n4112, 20\n", 4112) == 120 * MiB  # two GPUs
    assert parse_gpu_memory("No devices were found\n") is None


def test_readout_label_shows_this_process_beside_the_total():
    r = Readout(1, 1, 1, 1, vram_used=3400 * MiB, vram_total=81559 * MiB, vram_process=1757 * MiB)
    assert vram_text(r) == "VRAM 1.7G/79.6G"
    whole = Readout(1, 1, 1, 1, vram_used=3400 * MiB, vram_total=81559 * MiB)
    assert vram_text(whole) == "VRAM 3.3G/79.6G"


def test_sampler_reads_nvidia_smi(tmp_path, monkeypatch):
    """A stand-in nvidia-smi on PATH answers with the recorded files (this pid added)."""
    apps = tmp_path / "apps.csv"
    sample = (DATA / "nvidia_smi_compute_apps_sample.csv").read_text()
    apps.write_text(sample + f"{os.getpid()}, 640\n")
    smi = tmp_path / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        f'case "$1" in --query-gpu=*) cat "{DATA / "nvidia_smi_used_h100.csv"}";;\n'
        f'  --query-compute-apps=*) cat "{apps}";; *) exit 2;; esac\n'
    )
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    r = Sampler()()
    assert (r.vram_used, r.vram_total, r.vram_process) == (0, 81559 * MiB, 640 * MiB)
