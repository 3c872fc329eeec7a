"""Which model and quant to run here, for a task: ranked, with the figures behind it.

Policy, as the field practises it:
- Q4_K_M by default: the usual balance of size and quality;
- for code and maths, Q8_0, then Q6_K, then Q5_K_M when they fit, since exact
  tokens matter more there; 4-bit counts against a choice for those tasks;
- below 4 bits only when nothing better fits (a 70B on one 24 GB GPU);
- leave room for the OS and other programs; offload every layer to the GPU when
  it fits, else as many as do (fit.py);
- a choice that does not fit never ranks above one that does, nor one slower than
  reading (5 tokens/s: a reply that comes slower than people read it) above one that
  is not; among those alike, size times the quality its quant keeps, scaled down by the
  square of how far it falls short of conversational speed (10 tokens/s); where everything is slower
  than reading (a Pi 4), the quickest first; of those that do not fit, the nearest to
  fitting first;
- a model already on this machine is marked, never ranked up for it: the best choice
  for the task here is the same whether or not it is installed.

The picker and `recommend` show this one ranking, with one rounding (``speed_text``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from edgechat.facts.device import Device
from edgechat.planning.budget import Figures
from edgechat.planning.budget import default as default_budget
from edgechat.planning.catalog import CatalogModel
from edgechat.planning.fit import COMFORTABLE, NO_FIT, TIGHT, Fit, plan_gpu_layers
from edgechat.planning.memory import QUANT_BITS, MemoryEstimate
from edgechat.planning.plan import RunPlan
from edgechat.planning.speed import SpeedEstimate, tokens_per_second

TASKS = ("chat", "code", "math", "summarise")
# Below this many tokens per second a reply comes slower than people read (about four
# words a second, some 5 tokens); above FAST it keeps up with a conversation.
SLOW_TOKENS_PER_S = 5.0
FAST_TOKENS_PER_S = 10.0
_GENERAL = [
    "Q4_K_M",
    "Q4_K_S",
    "IQ4_XS",
    "Q4_0",
    "Q4_1",
    "Q5_K_M",
    "Q6_K",
    "Q8_0",
    "Q3_K_L",
    "Q3_K_M",
    "IQ3_M",
    "Q3_K_S",
    "Q2_K",
    "IQ2_M",
    "IQ2_XS",
    "IQ2_XXS",
    "IQ1_M",
]
_PRECISE = ["Q8_0", "Q6_K", "Q5_K_M", *[q for q in _GENERAL if q not in ("Q8_0", "Q6_K", "Q5_K_M")]]
QUANT_PREFERENCE = {"chat": _GENERAL, "summarise": _GENERAL, "code": _PRECISE, "math": _PRECISE}


@dataclass(frozen=True)
class Choice:
    model: CatalogModel
    quant: str
    estimate: MemoryEstimate  # its plan (estimate.plan) is what would run
    fit: Fit
    speed: SpeedEstimate
    download_bytes: int
    reason: str
    score: float
    installed: bool = False  # a file on this machine (pulled, imported or the starter)
    measured: Figures | None = None  # a receipt's figures on the user's own text
    meets_budget: bool | None = None  # do they meet the task's budget (None: none)

    @property
    def id(self) -> str:
        return f"{self.model.id}:{self.quant}"

    @property
    def slow(self) -> bool:
        return self.speed.tokens_per_s < SLOW_TOKENS_PER_S

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "installed": self.installed,
            "model": self.model.id,
            "name": self.model.name,
            "quant": self.quant,
            "repo": self.model.repo,
            "gated": self.model.gated,
            "license": self.model.license,
            "n_ctx": self.estimate.n_ctx,
            "gpu_layers": self.estimate.n_gpu_layers,
            "ram_bytes": self.estimate.ram_needed,
            "vram_bytes": self.estimate.vram,
            "download_bytes": self.download_bytes,
            "params": self.model.n_params,
            "params_b": self.model.params_b,
            "fit": self.fit.label,  # about memory only; tokens_per_s says how quick
            "tokens_per_s": float(speed_text(self.speed.tokens_per_s)),
            "reason": self.reason,
            "measured": self.measured.as_dict() if self.measured else None,
            "meets_budget": self.meets_budget,
        }


def speed_text(tokens_per_s: float) -> str:
    """Tokens/s as every front end shows it: one decimal below 10 (0.3 is not 0), whole
    numbers above (a tenth there is noise)."""
    return f"{tokens_per_s:.1f}" if tokens_per_s < 10 else f"{tokens_per_s:.0f}"


def _quality(quant: str, task: str, measured_ok: bool = False) -> float:
    """How much of a model's quality a quant keeps, roughly, for ranking; one whose
    receipt meets the task's budget keeps what the task needs, measured."""
    if measured_ok:
        return 1.0
    bits = QUANT_BITS[quant]
    keep = 1.0 if bits >= 4.4 else 0.8 if bits >= 3.4 else 0.5 if bits >= 2.5 else 0.35
    if task in ("code", "math") and bits < 5.5:
        keep *= 0.4
    return keep


def _reason(
    model: CatalogModel,
    quant: str,
    est: MemoryEstimate,
    fit: Fit,
    tps: float,
    task: str,
    n_layers: int,
    basis: str = "the preferred quant its repo offers",
) -> str:
    if fit.label == NO_FIT:
        return f"does not fit: {fit.why}"
    parts = []
    if "qat" in model.id:
        parts.append(
            f"{quant} made by quantisation-aware training: close to full-precision quality "
            "at 4 bits"
        )
    elif quant == "Q4_K_M":
        parts.append("Q4_K_M, the usual balance of size and quality")
    elif task in ("code", "math") and quant in ("Q8_0", "Q6_K", "Q5_K_M"):
        parts.append(f"{quant}: {task} keeps more of its accuracy at higher precision")
    elif QUANT_BITS[quant] < 3.4:
        parts.append(f"{quant}: very low bit width, the only way this size fits")
    elif len(model.quants) == 1:
        parts.append(f"{quant}, the only quant its repo offers")
    else:
        parts.append(f"{quant}: {basis}")
    if model.gated:
        parts.append("gated: accept its licence on the hub and `edgechat login` first")
    if task in model.tasks and "chat" not in model.tasks:
        parts.append(f"a {task} specialist")
    if est.n_gpu_layers > n_layers:
        parts.append("all layers on the GPU")
    elif est.n_gpu_layers:
        # llama.cpp counts the output head as a layer: n_layers + 1 in all.
        parts.append(f"{est.n_gpu_layers} of {n_layers + 1} layers on the GPU")
    if fit.label == TIGHT:
        parts.append(f"tight: {fit.why}")
    if tps < SLOW_TOKENS_PER_S:
        parts.append(f"slow here (about {tps:.1f} tokens/s)")
    return "; ".join(parts)


def choose(
    model: CatalogModel,
    task: str,
    n_ctx: int,
    device: Device,
    cpu_gb_s: float,
    quant: str | None = None,
    kv_cache: str = "f16",
    measured: Mapping[str, Figures] | None = None,
) -> Choice:
    """The best quant of ``model`` for ``task`` here (or ``quant``), with its plan and figures.

    ``measured``: receipts' figures by ``ID:QUANT``. A quant whose figures meet the
    task's budget comes first (the smallest of them), one that misses it last."""
    wanted = [quant] if quant else [q for q in QUANT_PREFERENCE[task] if q in model.quants]
    wanted = wanted or list(model.quants)
    budget = default_budget(task)
    mine = {q: f for q in model.quants if (f := (measured or {}).get(f"{model.id}:{q}"))}
    passing = sorted((q for q in mine if budget.meets(mine[q])), key=QUANT_BITS.get)
    failing = [q for q in wanted if q in mine and q not in passing]
    if not quant:
        rest = [q for q in wanted if q not in passing and q not in failing]
        wanted = [*passing, *rest, *failing]
    candidates = []
    for q in wanted:
        shape = model.shape(q)
        plan = RunPlan(
            model_path=Path(model.repo) / q, n_ctx=n_ctx, type_k=kv_cache, type_v=kv_cache
        )
        est, fit = plan_gpu_layers(plan, shape, device)
        speed = tokens_per_second(shape, est, device, cpu_gb_s)
        candidates.append((q, shape, est, fit, speed))
    # The preferred quant that fits comfortably at reading speed; when every 4-bit-or-
    # better quant is slower than that, the quickest of them; below 4 bits only when
    # nothing else fits comfortably; else tight; else the one nearest to fitting.
    comfortable = [c for c in candidates if c[3].label == COMFORTABLE]
    four_bit = [c for c in comfortable if QUANT_BITS[c[0]] >= 4.4 or c[0] in passing]
    quick = [c for c in four_bit if c[4].tokens_per_s >= SLOW_TOKENS_PER_S]
    tight = [c for c in candidates if c[3].label == TIGHT]
    if quick:
        picked = quick[0]
        basis = (
            "the preferred quant its repo offers"
            if picked is candidates[0]
            else f"the first of the preferred quants that fits comfortably at reading speed "
            f"({candidates[0][0]} does not)"
        )
    elif four_bit:
        picked = max(four_bit, key=lambda c: c[4].tokens_per_s)
        basis = "the quickest quant of 4 bits or more here"
    elif comfortable or tight:
        picked = (comfortable or tight)[0]
        basis = "below 4 bits, the best that fits"
    else:
        picked = min(candidates, key=lambda c: c[2].ram_needed + c[2].vram)
        basis = "the smallest quant, nearest to fitting"
    q, shape, est, fit, speed = picked
    reason = _reason(model, q, est, fit, speed.tokens_per_s, task, shape.n_layers, basis)
    if q in passing:
        reason = f"{q} meets the {task} budget on your text (KLD {mine[q].kl_mean:.3g}); {reason}"
    elif failing and fit.label != NO_FIT:
        reason += f"; {', '.join(failing)} missed the {task} budget on your text"
    score = _score(model, q, task, speed, q in passing)
    met = (q in passing) if q in mine else None
    return Choice(
        model, q, est, fit, speed, shape.weight_bytes, reason, score, False, mine.get(q), met
    )


def _score(
    model: CatalogModel, quant: str, task: str, speed: SpeedEstimate, measured_ok: bool = False
) -> float:
    score = model.params_b * _quality(quant, task, measured_ok)
    if task in model.tasks and "chat" not in model.tasks:
        score *= 1.5  # a specialist beats a generalist of its size at its task
    # Waiting grows as speed falls, and a reply at half the conversational pace feels far
    # worse than half as good: the shortfall counts squared (a 3B at 5.4 tokens/s loses
    # to a 1.7B at 9.5 on two cores; a 32B at 5 to a 14B at 40 on a 24 GB GPU).
    return score * min(1.0, speed.tokens_per_s / FAST_TOKENS_PER_S) ** 2


def choose_file(
    model_id: str,
    path: Path,
    task: str,
    n_ctx: int,
    device: Device,
    cpu_gb_s: float,
    kv_cache: str = "f16",
    entry: CatalogModel | None = None,
    figures: Figures | None = None,
) -> Choice | None:
    """An installed model file as a choice, planned from its own header; None when it
    does not suit ``task`` (a base model cannot chat) or its header cannot be read."""
    from edgechat.errors import EdgechatError
    from edgechat.facts.base_model import header_is_base_model
    from edgechat.facts.gguf import inspect_file
    from edgechat.planning.memory import Shape

    try:
        facts = inspect_file(path)
    except EdgechatError:
        return None  # `models list` says what is wrong with it
    # A base model cannot chat (`chat` refuses it); the summariser asks it by completion.
    tasks = entry.tasks if entry else () if header_is_base_model(facts) else ("chat", "summarise")
    if not (_suits(task, tasks) or (not tasks and task == "summarise")):
        return None
    name, _, quant = model_id.rpartition(":")
    quant = quant if quant in QUANT_BITS else facts.file_type or quant
    model = CatalogModel(
        id=name or model_id,
        name=facts.name or model_id,
        repo=entry.repo if entry else "",
        license=entry.license if entry else "",
        gated=False,  # it is here already
        params_b=facts.n_params / 1e9,
        context=facts.context_length or n_ctx,
        tasks=tuple(tasks) or ("summarise",),
        quants=(quant,),
        arch={},
    )
    shape = Shape.from_facts(facts)
    plan = RunPlan(path, n_ctx=min(n_ctx, model.context), type_k=kv_cache, type_v=kv_cache)
    est, fit = plan_gpu_layers(plan, shape, device)
    speed = tokens_per_second(shape, est, device, cpu_gb_s)
    reason = "on this machine: works offline"
    if not fit.fits or fit.label == TIGHT or speed.tokens_per_s < SLOW_TOKENS_PER_S:
        why = _reason(model, quant, est, fit, speed.tokens_per_s, task, shape.n_layers, "")
        reason += "; " + why.split("; ", 1)[-1] if fit.fits else f"; {why}"
    met = default_budget(task).meets(figures) if figures else None
    if met:
        reason = f"meets the {task} budget on your text (KLD {figures.kl_mean:.3g}); {reason}"
    elif figures:
        reason += f"; missed the {task} budget on your text"
    score = _score(model, quant, task, speed, bool(met)) if quant in QUANT_BITS else 0.0
    return Choice(model, quant, est, fit, speed, 0, reason, score, True, figures, met)


def _suits(task: str, tasks: tuple[str, ...]) -> bool:
    """Any instruct model chats; a specialist only at its own task."""
    if task == "chat":
        return "chat" in tasks or "summarise" in tasks
    return task in tasks


def _rank_key(c: Choice, signed_in: bool = True):
    fit_rank = {COMFORTABLE: 0, TIGHT: 1, NO_FIT: 2}[c.fit.label]
    if not c.fit.fits:  # the nearest to fitting first: it says what would
        return (fit_rank, False, False, False, c.estimate.ram_needed + c.estimate.vram, 0.0)
    locked = c.model.gated and not signed_in  # cannot be pulled yet: never first
    if c.slow:  # slower than reading: the quicker the better
        return (fit_rank, locked, True, -c.speed.tokens_per_s, -c.score)
    return (fit_rank, locked, False, -c.score, -c.speed.tokens_per_s)


def recommend(
    catalog: dict[str, CatalogModel],
    device: Device,
    task: str = "chat",
    n_ctx: int = 4096,
    cpu_gb_s: float = 25.0,
    signed_in: bool = True,
    kv_cache: str = "f16",
    installed: dict[str, Path] | None = None,
    measured: Mapping[str, Figures] | None = None,
) -> list[Choice]:
    """Every catalog model suited to ``task`` at its best quant here, and every
    ``installed`` model file (id -> path) that suits it, best first.

    Without a hub token (``signed_in`` False) a gated model ranks below every open one
    that fits as well: it cannot be pulled until the user signs in.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task}; choose from {', '.join(TASKS)}")
    choices = {}
    for m in catalog.values():
        if _suits(task, m.tasks):
            c = choose(m, task, min(n_ctx, m.context), device, cpu_gb_s, None, kv_cache, measured)
            choices[c.id] = c
    for model_id, path in (installed or {}).items():
        entry = catalog.get(model_id.rpartition(":")[0])
        figures = (measured or {}).get(model_id)
        mine = choose_file(model_id, path, task, n_ctx, device, cpu_gb_s, kv_cache, entry, figures)
        if mine is not None:
            choices[mine.id] = mine  # its own header, not the catalog's stand-in
    return sorted(choices.values(), key=lambda c: _rank_key(c, signed_in))


def nothing_fits(choices: list[Choice], device: Device) -> str | None:
    """When not one choice fits: one line saying so, and what the nearest needs (and
    at the smallest context, which is the first thing to try)."""
    if not choices or any(c.fit.fits for c in choices):
        return None
    from edgechat.facts.device import format_size
    from edgechat.limits import MIN_CTX
    from edgechat.planning.memory import estimate

    near = choices[0]  # ranked nearest to fitting first
    est = near.estimate
    line = (
        f"nothing fits here ({format_size(device.ram_available)} of RAM available): the "
        f"nearest, {near.id}, needs {format_size(est.ram_needed)} at {est.n_ctx} tokens"
    )
    if est.n_ctx > MIN_CTX and not est.n_gpu_layers:
        shape = near.model.shape(near.quant) if not near.installed else None
        if shape is None:
            from edgechat.facts.gguf import inspect_file
            from edgechat.planning.memory import Shape

            shape = Shape.from_facts(inspect_file(est.plan.model_path))
        small = estimate(replace(est.plan, n_ctx=MIN_CTX), shape, device.simd, None)
        line += f" ({format_size(small.ram_needed)} with --ctx {MIN_CTX})"
    return line + "; free some memory, or run on a machine with more"


def default_quant(catalog_id: str, device: Device | None = None, n_ctx: int = 4096) -> str:
    """The quant to pull when none is named: the recommender's choice for this device,
    for the model's first task, at ``n_ctx`` (the caller's configured context)."""
    from edgechat.facts.device import detect
    from edgechat.planning import catalog
    from edgechat.planning.speed import cpu_bandwidth

    model, _ = catalog.find(catalog_id)
    device = device or detect()
    return choose(model, model.tasks[0], n_ctx, device, cpu_bandwidth(device)).quant
