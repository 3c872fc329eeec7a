"""Does a plan fit this device? Budgets, fit labels, and how many layers the GPU takes.

The rules a careful user follows by hand: leave the OS and other programs room
(a fifth of RAM, at least half a GiB), keep a tenth of the GPU's memory free for
the driver and the desktop, offload every layer when they fit, else as many as do.
Apple Silicon's GPU shares RAM, and Metal lets it use about two thirds of it (three
quarters above 36 GiB).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from edgechat.facts.device import Device, GiB, format_size
from edgechat.planning.memory import MemoryEstimate, Shape, estimate
from edgechat.planning.plan import RunPlan

COMFORTABLE, TIGHT, NO_FIT = "comfortable", "tight", "does not fit"
_ORDER = {COMFORTABLE: 0, TIGHT: 1, NO_FIT: 2}


def ram_reserve(total: int) -> int:
    return max(GiB // 2, total // 5)


def gpu_backend(device: Device) -> str | None:
    """The llama.cpp GPU backend that would run here, or None for CPU only."""
    if not device.gpus:
        return None
    gpu = device.gpus[0]
    assumed = any(o.startswith(("vram=", "gpu=")) for o in device.overrides)
    builds = set(device.llama_backends)
    if not assumed and not device.gpu_offload:
        return None  # a GPU, but this llama.cpp build cannot use it
    if gpu.unified or gpu.vendor == "apple":
        return "metal"
    for backend, name in (("cuda", "cuda"), ("hip", "rocm"), ("vulkan", "vulkan")):
        if backend in builds:
            return name
    return {"nvidia": "cuda", "amd": "rocm"}.get(gpu.vendor, "vulkan")


def metal_limit(ram_total: int) -> int:
    return ram_total * 3 // 4 if ram_total > 36 * GiB else ram_total * 2 // 3


@dataclass(frozen=True)
class Fit:
    label: str
    ram_needed: int
    ram_budget: int  # comfortable: at most this
    ram_available: int  # tight: at most this
    vram: int
    vram_budget: int | None
    vram_free: int | None
    why: str  # one line when it is not comfortable

    @property
    def fits(self) -> bool:
        return self.label != NO_FIT


def judge(est: MemoryEstimate, device: Device) -> Fit:
    total = device.ram_total or 0
    available = device.ram_available if device.ram_available is not None else total
    budget = min(total - ram_reserve(total), available) if total else available
    label, why = COMFORTABLE, ""
    if est.ram_needed > available:
        label = NO_FIT
        why = f"needs {format_size(est.ram_needed)} of RAM; {format_size(available)} is available"
    elif est.ram_needed > budget:
        label = TIGHT
        why = f"leaves under {format_size(total - est.ram_needed)} of RAM for everything else"
    vram_budget = vram_free = None
    gpu = device.gpus[0] if device.gpus else None
    if est.backend is not None and gpu is not None:
        if gpu.unified:
            vram_free = metal_limit(total)
            vram_budget = vram_free
        else:
            vram_free = gpu.vram_free if gpu.vram_free is not None else (gpu.vram_total or 0)
            vram_budget = int(vram_free * 0.9)
        if est.vram > vram_free:
            label = NO_FIT
            why = f"needs {format_size(est.vram)} of VRAM; {format_size(vram_free)} is free"
        elif est.vram > vram_budget and label == COMFORTABLE:
            label = TIGHT
            why = f"uses nearly all of the GPU's {format_size(vram_free)} free memory"
    return Fit(label, est.ram_needed, budget, available, est.vram, vram_budget, vram_free, why)


def worse(a: str, b: str) -> bool:
    return _ORDER[a] > _ORDER[b]


def plan_gpu_layers(
    plan: RunPlan, shape: Shape, device: Device, simd: tuple[str, ...] | None = None
) -> tuple[MemoryEstimate, Fit]:
    """The plan with the most GPU layers that fit comfortably (all of them when they do).

    Returns its estimate and fit; with no usable GPU, the CPU plan.
    """
    simd = device.simd if simd is None else simd
    backend = gpu_backend(device)
    if backend is None:
        cpu = estimate(replace(plan, n_gpu_layers=0), shape, simd, None)
        return cpu, judge(cpu, device)

    def at(n: int) -> tuple[MemoryEstimate, Fit]:
        est = estimate(replace(plan, n_gpu_layers=n), shape, simd, backend)
        return est, judge(est, device)

    full = at(shape.n_layers + 1)
    if full[1].label == COMFORTABLE or backend == "metal":
        return full
    lo, hi = 0, shape.n_layers  # largest n in [0, n_layers] whose VRAM fits its budget
    while lo < hi:
        mid = (lo + hi + 1) // 2
        est, fit = at(mid)
        if fit.vram_budget is not None and est.vram <= fit.vram_budget:
            lo = mid
        else:
            hi = mid - 1
    best = at(lo)
    # A partial offload that still leaves RAM short is no better than the full one.
    return best if not worse(best[1].label, full[1].label) else full


def refusal(fit: Fit, est: MemoryEstimate) -> str:
    """The message for a plan that does not fit, with the figures and the ways out."""
    seqs = est.plan.n_seq
    return (
        f"this model will not fit: it {fit.why} "
        f"(estimate at {est.n_ctx} tokens of context"
        + (f" x {seqs} sequences" if seqs > 1 else "")
        + f": RAM {format_size(est.ram_needed)}"
        + (f", VRAM {format_size(est.vram)}" if est.vram else "")
        + "). Try a smaller quant or model (`edgechat recommend`), a smaller --ctx, "
        + ("a smaller --parallel, " if seqs > 1 else "")
        + "or --force to load it anyway"
    )


def plan_for(
    plan: RunPlan, shape: Shape, device: Device, auto_gpu: bool
) -> tuple[MemoryEstimate, Fit]:
    """Estimate and judge ``plan`` here; with ``auto_gpu`` choose its GPU layers first."""
    if auto_gpu:
        return plan_gpu_layers(plan, shape, device)
    est = estimate(plan, shape, device.simd, gpu_backend(device))
    return est, judge(est, device)


def plan_parallel(
    plan: RunPlan, shape: Shape, device: Device, auto_gpu: bool, most: int = 4
) -> tuple[MemoryEstimate, Fit]:
    """The plan with the most sequences (up to ``most``, each with the plan's context)
    whose caches fit comfortably without taking GPU layers from one sequence's plan;
    one sequence when no more do."""
    one = plan_for(replace(plan, n_seq=1), shape, device, auto_gpu)
    for n in range(most, 1, -1):
        est, fit = plan_for(replace(plan, n_seq=n), shape, device, auto_gpu)
        if fit.label == COMFORTABLE and est.n_gpu_layers >= one[0].n_gpu_layers:
            return est, fit
    return one
