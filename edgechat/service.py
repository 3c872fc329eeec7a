"""From what the user asked for (--model, --ctx, ...) to a RunPlan that fits, shared by
the command line and the TUI: resolve the model, estimate it, refuse what won't fit."""

from __future__ import annotations

import sys

from edgechat.config import Settings
from edgechat.errors import EdgechatError
from edgechat.planning.plan import RunPlan


def checked_plan(
    model: str | None,
    settings: Settings,
    ctx: int | None = None,
    threads: int | None = None,
    gpu_layers: int | None = None,
    memory: str | None = None,
    vram: str | None = None,
    force: bool = False,
    device=None,
    kv_cache: str | None = None,
) -> RunPlan:
    """The plan to load; raises with the figures and the ways out when it does not fit."""
    from edgechat.llama import backend

    backend.load()  # llama.cpp before gguf's numpy, or a CUDA build crashes on load
    from edgechat.facts.device import detect
    from edgechat.facts.gguf import inspect_file
    from edgechat.models import registry
    from edgechat.planning.fit import plan_for, refusal
    from edgechat.planning.memory import Shape

    path = registry.resolve(model, settings.default_model)
    layers = gpu_layers if gpu_layers is not None else settings.gpu_layers
    plan = RunPlan(
        model_path=path,
        n_ctx=ctx or settings.ctx,
        n_threads=threads if threads is not None else settings.threads,
        n_gpu_layers=max(0, layers),
        type_k=kv_cache or settings.kv_cache,  # --kv-cache, else the setting: the estimate
        type_v=kv_cache or settings.kv_cache,  # sees the smaller cache too
    )
    if plan.n_ctx < 64:
        raise EdgechatError(f"--ctx {plan.n_ctx} is too small; use 512 or more")
    shape = Shape.from_facts(inspect_file(path))
    device = device or detect(memory, vram)
    est, fit = plan_for(plan, shape, device, auto_gpu=layers < 0)
    if not fit.fits:
        if not force:
            raise EdgechatError(refusal(fit, est))
        sys.stderr.write(f"edgechat: loading anyway (--force): {fit.why}\n")
    return est.plan
