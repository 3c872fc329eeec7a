"""Expected generation speed: a roofline of memory bandwidth and arithmetic.

Each generated token reads every weight once (plus the KV cache it attends to), so
tokens/s is at most bandwidth / bytes per token; small models on few cores hit the
arithmetic limit first (two operations per weight per token). The CPU's read
bandwidth is measured once, in a fraction of a second, and cached; GPUs are looked
up by name, since reading their memory from here would need their toolkits.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edgechat.facts.device import Device
from edgechat.planning.gpu import offload_split
from edgechat.planning.memory import KV_TYPE_BYTES, MemoryEstimate, Shape, kv_cells

GB = 1e9
# Share of peak bandwidth llama.cpp's generation loop sustains.
CPU_EFFICIENCY = 0.8
GPU_EFFICIENCY = 0.7
# Sustained arithmetic per core while generating (GFLOP/s, two per weight per token),
# by the best SIMD the core has, and a fixed cost per token (graph, sampling over the
# vocabulary). Fitted on the project's machine (AVX512_VNNI, two cores): SmolLM2 and
# Gemma 3 270M; the other rows are scaled from it by SIMD width.
_CORE_GFLOPS = (
    ("AMX_INT8", 30.0),
    ("AVX512_VNNI", 20.0),
    ("AVX512", 18.0),
    ("AVX2", 14.0),
    ("I8MM", 12.0),
    ("DOTPROD", 7.0),
    ("NEON", 2.5),
)
TOKEN_OVERHEAD_S = 0.002
VOCAB_OVERHEAD_S = 8e-9  # per vocabulary entry, per token
_DEFAULT_CORE_GFLOPS = 4.0

# Memory bandwidth (GB/s) of common GPUs and Apple chips, from their data sheets.
_GPU_BANDWIDTH = (
    ("H200", 4800),
    ("H100", 3350),
    ("A100", 1555),
    ("L40", 864),
    ("L4", 300),
    ("T4", 320),
    ("A10", 600),
    ("RTX 5090", 1792),
    ("RTX 5080", 960),
    ("RTX 4090", 1008),
    ("RTX 4080", 717),
    ("RTX 4070 Ti", 504),
    ("RTX 4070", 504),
    ("RTX 4060 Ti", 288),
    ("RTX 4060", 272),
    ("RTX 3090", 936),
    ("RTX 3080", 760),
    ("RTX 3070", 448),
    ("RTX 3060 Ti", 448),
    ("RTX 3060", 360),
    ("RTX 3050", 224),
    ("RTX 2080", 448),
    ("RTX 2070", 448),
    ("RTX 2060", 336),
    ("GTX 1660", 192),
    ("GTX 1080", 320),
    ("RX 7900", 960),
    ("RX 6800", 512),
    ("M4 Max", 546),
    ("M4 Pro", 273),
    ("M4", 120),
    ("M3 Max", 400),
    ("M3 Pro", 150),
    ("M3", 100),
    ("M2 Ultra", 800),
    ("M2 Max", 400),
    ("M2 Pro", 200),
    ("M2", 100),
    ("M1 Ultra", 800),
    ("M1 Max", 400),
    ("M1 Pro", 200),
    ("M1", 68),
)
_DEFAULT_GPU_BANDWIDTH = 300.0
# Boards whose memory is slow and known: a Pi's read bandwidth in practice.
_BOARD_BANDWIDTH = (("Raspberry Pi 5", 12.0), ("Raspberry Pi 4", 4.0), ("Raspberry Pi 3", 2.0))


def gpu_bandwidth(name: str) -> float:
    """GB/s for a GPU or Apple chip, by its marketing name."""
    for key, bw in _GPU_BANDWIDTH:
        if re.search(rf"\b{re.escape(key)}\b", name, re.IGNORECASE):
            return float(bw)
    return _DEFAULT_GPU_BANDWIDTH


def _bits(types: dict[str, int]) -> float:
    """Average bits per weight of a layer's tensors, from their types' block sizes."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    total = weights = 0.0
    for name, nbytes in types.items():
        try:
            block, size = GGML_QUANT_SIZES[GGMLQuantizationType[name]]
            bits = size * 8 / block
        except KeyError:  # a catalog stand-in like Q4_K_M: its typical figure
            from edgechat.planning.memory import QUANT_BITS

            bits = QUANT_BITS.get(name, 4.5)
        total += nbytes
        weights += nbytes * 8 / bits
    return total * 8 / weights if weights else 4.5


def core_gflops(simd: tuple[str, ...]) -> float:
    for feature, gflops in _CORE_GFLOPS:
        if feature in simd:
            return gflops
    return _DEFAULT_CORE_GFLOPS


def measure_cpu_bandwidth(size: int = 256 * 1024**2, threads: int = 0) -> float:
    """Read bandwidth in GB/s: sum a large array from several threads, best of five.

    Each thread's share is timed by the CPU time it got, not by the clock: on a busy
    machine a reader waiting for a core reads nothing, and the clock counted that wait
    as slow memory (4 GB/s one launch, 9 the next, where the CPU time says 23), so the
    ranking built on it changed from one launch to the next.
    """
    import os

    import numpy as np

    threads = threads or max(1, min(8, os.cpu_count() or 1))
    data = np.ones(size // 8, dtype=np.float64)
    chunks = np.array_split(data, threads)
    best = 0.0
    for _ in range(5):
        spent = [0.0] * threads

        def read(i: int, spent=spent) -> None:
            started = time.thread_time()
            chunks[i].sum()
            spent[i] = time.thread_time() - started

        workers = [threading.Thread(target=read, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = max(best, data.nbytes / max(*spent, 1e-6))  # as if each had its own core
    return best / GB


def _load_per_core(device: Device) -> float:
    """The 1-minute load average per logical core (0 where the OS has none)."""
    try:
        return os.getloadavg()[0] / max(1, device.cores_logical or os.cpu_count() or 1)
    except (AttributeError, OSError):  # Windows
        return 0.0


def _looks_wrong(gb_s: float, load_then: float, load_now: float) -> bool:
    """A cached bandwidth to measure again: implausibly low for any machine that runs a
    model, or taken under load clearly heavier than now."""
    return gb_s < 2.0 or (load_then > 0.5 and load_now < load_then / 2)


def _bandwidth_cache(device: Device) -> tuple[Path, str, dict]:
    """The cache file, this machine's key in it, and what it holds for this machine."""
    from edgechat.paths import paths

    cache = paths().cache_dir / "bandwidth.json"
    key = f"{device.cpu_model}|{device.cores_logical}|{device.ram_total}"
    try:
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return cache, key, saved
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return cache, key, {}


def known_cpu_bandwidth(device: Device) -> float | None:
    """The CPU's read bandwidth in GB/s when it needs no measuring (a known board, a
    simulated machine, or measured before); None when only a measure can tell."""
    for board, bw in _BOARD_BANDWIDTH:
        if device.board and board in device.board:
            return bw
    if device.overrides:  # a simulated machine: a typical laptop
        return 25.0
    _, _, saved = _bandwidth_cache(device)
    try:
        gb_s = float(saved["gb_s"])
    except (KeyError, TypeError, ValueError):
        return None
    # A figure taken while the machine was busy reads low (18 instead of 47 GB/s on one
    # machine): measure again once it is quieter, and keep the better one.
    if _looks_wrong(gb_s, float(saved.get("load", 1.0)), _load_per_core(device)):
        return None
    return gb_s


def cpu_bandwidth(device: Device, measure: bool = True) -> float:
    """The CPU's read bandwidth in GB/s: known boards, else measured once and cached
    (a measure takes about a second: keep it off a UI thread)."""
    known = known_cpu_bandwidth(device)
    if known is not None:
        return known
    if not measure:
        return 25.0
    cache, key, saved = _bandwidth_cache(device)
    load = _load_per_core(device)
    available = device.ram_available or 2 * 1024**3
    gb_s = measure_cpu_bandwidth(size=int(min(256 * 1024**2, available * 0.05)))
    saved_gb_s = float(saved.get("gb_s", 0.0))
    if gb_s < saved_gb_s:
        gb_s, load = saved_gb_s, float(saved.get("load", load))
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        record = {"key": key, "gb_s": round(gb_s, 2), "load": round(load, 2)}
        cache.write_text(json.dumps(record))
    except OSError:
        pass  # a read-only cache only costs a re-measure
    return gb_s


@dataclass(frozen=True)
class SpeedEstimate:
    tokens_per_s: float
    bound: str  # "memory" or "compute"
    cpu_gb_s: float
    gpu_gb_s: float | None


def tokens_per_second(
    shape: Shape, est: MemoryEstimate, device: Device, cpu_gb_s: float, context_fill: float = 0.5
) -> SpeedEstimate:
    """Expected generation speed with the context ``context_fill`` full."""
    plan = est.plan
    first_gpu, head_on_gpu = offload_split(shape.n_layers, est.n_gpu_layers)
    head = shape.output[1] if shape.output else shape.embd[1]
    cells = kv_cells(shape, plan, est.n_ctx)
    per_value = KV_TYPE_BYTES.get(plan.type_k, 2.0)
    cpu_bytes = gpu_bytes = 0.0
    cpu_flops = 0.0
    for il, types in enumerate(shape.layers):
        heads = shape.n_head_kv[il] if il < len(shape.n_head_kv) else shape.n_head_kv[-1]
        used = cells[il] * context_fill
        kv = used * heads * (shape.head_dim_k + shape.head_dim_v) * per_value
        read = sum(types.values()) + kv
        if il >= first_gpu:
            gpu_bytes += read
        else:
            cpu_bytes += read
            # Two operations per weight, and attention: every query head against every cell.
            n_weights = sum(types.values()) * 8 / _bits(types)
            cpu_flops += 2 * n_weights + 2 * used * shape.n_head * (
                shape.head_dim_k + shape.head_dim_v
            )
    if head_on_gpu:
        gpu_bytes += head
    else:
        cpu_bytes += head
        cpu_flops += 2 * shape.n_vocab * shape.n_embd
    gpu = next((g for g in device.gpus), None)
    gpu_gb_s = gpu_bandwidth(gpu.name) if gpu and est.n_gpu_layers else None
    if gpu and gpu.unified and gpu_gb_s:
        cpu_gb_s = gpu_gb_s  # Apple: one memory, the chip's bandwidth
    memory_s = cpu_bytes / (cpu_gb_s * GB * CPU_EFFICIENCY)
    if gpu_gb_s:
        memory_s += gpu_bytes / (gpu_gb_s * GB * GPU_EFFICIENCY)
    cores = plan.n_threads or device.cores_usable or 1
    compute_s = cpu_flops / (cores * core_gflops(device.simd) * GB)
    seconds = max(memory_s, compute_s) + TOKEN_OVERHEAD_S + VOCAB_OVERHEAD_S * shape.n_vocab
    return SpeedEstimate(
        tokens_per_s=1 / seconds if seconds else 0.0,
        bound="memory" if memory_s >= compute_s else "compute",
        cpu_gb_s=cpu_gb_s,
        gpu_gb_s=gpu_gb_s,
    )
