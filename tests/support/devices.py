"""Machines that are not this one, for the planner, the doctor and the app's picker."""

from __future__ import annotations

from dataclasses import replace


def simulated_device(**changes):
    """A 16 GiB, 4-core CPU-only laptop; ``changes`` make it another machine."""
    from edgechat.facts.device import Device, GiB

    laptop = Device(
        ram_total=16 * GiB,
        ram_available=12 * GiB,
        swap_total=0,
        swap_free=0,
        cpu_model="simulated",
        cores_physical=4,
        cores_logical=8,
        simd=("AVX2", "FMA"),
        arch="x86_64",
        os="Linux",
        board=None,
        models_dir="/models",
        disk_free=100 * GiB,
        gpus=(),
        llama_backends=("cpu",),
        gpu_offload=False,
    )
    return replace(laptop, **changes)
