"""Device detection: parsers on recorded tool output, and the real probe on this machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.cli import run_main

from edgechat.errors import EdgechatError
from edgechat.facts import device
from edgechat.facts.device import GiB, MiB

DATA = Path(__file__).parent / "data"


def test_cpuinfo_x86_recorded_here():
    model, simd = device.parse_cpuinfo((DATA / "cpuinfo_epyc.txt").read_text())
    assert model == "AMD EPYC"
    assert {"SSE3", "AVX2", "AVX512", "FMA", "F16C"} <= set(simd)


@pytest.mark.parametrize(
    "name, core, features",
    [
        ("cpuinfo_pi4.txt", "Cortex-A72", {"NEON"}),
        ("cpuinfo_pi5.txt", "Cortex-A76", {"NEON", "DOTPROD", "FP16"}),
    ],
)
def test_cpuinfo_raspberry_pi(name, core, features):
    model, simd = device.parse_cpuinfo((DATA / name).read_text())
    assert model == core
    assert features <= set(simd)
    assert "DOTPROD" not in simd or name.endswith("pi5.txt")


def test_board_from_device_tree():
    raw = (DATA / "devicetree_model_pi4").read_bytes().decode()
    assert device.parse_board(raw) == "Raspberry Pi 4 Model B Rev 1.4"
    assert device.parse_board(None) is None and device.parse_board("\x00") is None


def test_nvidia_smi():
    gpus = device.parse_nvidia_smi((DATA / "nvidia_smi.csv").read_text())
    assert [g.name for g in gpus] == ["NVIDIA GeForce RTX 3060", "NVIDIA RTX A6000"]
    assert gpus[0].vram_total == 12288 * MiB and gpus[0].vram_free == 11553 * MiB
    assert gpus[0].driver == "550.54.14" and gpus[0].vendor == "nvidia"
    # A field the driver cannot read comes back as "[N/A]": unknown, not a crash.
    odd = device.parse_nvidia_smi("Tesla K80, [N/A], [N/A], 470.0\ngarbage\n")
    assert odd[0].vram_total is None and len(odd) == 1


def test_rocm_smi():
    gpus = device.parse_rocm_smi((DATA / "rocm_smi.json").read_text())
    assert len(gpus) == 1 and gpus[0].vendor == "amd"
    assert gpus[0].vram_total == 17163091968
    assert gpus[0].vram_free == 17163091968 - 1041223680
    assert "Navi 21" in gpus[0].name
    assert device.parse_rocm_smi("not json") == []


def test_backends_from_library_names():
    assert device.backends_from_libs(["libggml-cpu.so", "libggml-cuda.so.0"]) == ("cuda", "cpu")
    assert device.backends_from_libs(["libggml-base.so", "libllama.so"]) == ()
    assert device.backends_from_libs(["ggml-metal.dll", "ggml-cpu.dll"]) == ("metal", "cpu")


@pytest.mark.parametrize(
    "text, size",
    [("8G", 8 * GiB), ("8 GB", 8 * GiB), ("7.5GiB", int(7.5 * GiB)), ("512M", 512 * MiB)],
)
def test_parse_size(text, size):
    assert device.parse_size(text) == size


def test_parse_size_rejects_nonsense():
    with pytest.raises(EdgechatError, match="like 8G"):
        device.parse_size("lots")


def test_detect_this_machine():
    d = device.detect()
    assert d.ram_total and d.ram_total > 512 * MiB
    assert 0 < d.ram_available <= d.ram_total
    assert d.cores_logical and d.cores_logical >= 1
    assert d.llama_backends and "cpu" in d.llama_backends
    assert d.disk_free and d.disk_free > 0


def test_overrides_apply_everywhere():
    d = device.detect(memory="4G", vram="6G")
    assert d.ram_total == d.ram_available == 4 * GiB
    assert d.vram_total == 6 * GiB and len([g for g in d.gpus if not g.unified]) == 1
    assert d.overrides == ("memory=4.0 GiB", "vram=6.0 GiB")


def test_device_command_json_and_text():
    result = run_main("device", "--json", "--memory", "2G")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    for key in (
        "ram_total",
        "ram_available",
        "swap_total",
        "cpu_model",
        "cores_physical",
        "cores_logical",
        "simd",
        "board",
        "disk_free",
        "gpus",
        "llama_backends",
        "gpu_offload",
        "vram_total",
    ):
        assert key in data
    assert data["ram_total"] == 2 * GiB
    text = run_main("device")
    assert text.returncode == 0 and "memory" in text.stdout and "llama.cpp" in text.stdout
    bad = run_main("device", "--memory", "plenty")
    assert bad.returncode == 1 and "like 8G" in bad.stderr
