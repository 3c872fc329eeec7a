"""Which model and quant to run here, for a task: ranked, with the figures behind it.

Policy, as the field practises it:
- Q4_K_M by default: the usual balance of size and quality;
- for code and maths, Q8_0, then Q6_K, then Q5_K_M when they fit, since exact
  tokens matter more there; 4-bit counts against a choice for those tasks;
- below 4 bits only when nothing better fits (a 70B on one 24 GB GPU);
- leave room for the OS and other programs; offload every layer to the GPU when
  it fits, else as many as do (fit.py);
- a choice that does not fit never ranks above one that does, nor one slower than
  reading (3 tokens/s) above one that is not; then size times the quality its quant
  keeps, scaled down by how far it falls short of conversational speed (10 tokens/s);
  where everything is slower than reading (a Pi 4), the quickest first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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
# Below this many tokens per second a reply comes slower than people read; above
# FAST it keeps up with a conversation.
SLOW_TOKENS_PER_S = 3.0
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
    measured: Figures | None = None  # a receipt's figures on the user's own text
    meets_budget: bool | None = None  # do they meet the task's budget (None: none)

    @property
    def slow(self) -> bool:
        return self.speed.tokens_per_s < SLOW_TOKENS_PER_S

    def as_dict(self) -> dict:
        return {
            "id": f"{self.model.id}:{self.quant}",
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
            "tokens_per_s": round(self.speed.tokens_per_s, 1),
            "reason": self.reason,
            "measured": self.measured.as_dict() if self.measured else None,
            "meets_budget": self.meets_budget,
        }


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
    measured: Mapping[str, Figures] | None = None,
) -> Choice:
    """The best quant of ``model`` for ``task`` here (or ``quant``), with its plan and figures.

    ``measured``: receipts' figures by ``ID:QUANT``. A quant whose figures meet the
    task's budget comes first (the smallest of them), one that misses it last."""
    wanted = [quant] if quant else [q for q in QUANT_PREFERENCE[task] if q in model.quants]
    wanted = wanted or list(model.quants)
    budget = default_budget(task)
    mine = {q: f for q in model.quants if (f := (measured or {}).get(f"{model.id}:{q}"))}
    passing = [q for q in mine if budget.meets(mine[q])]
    passing.sort(key=lambda q: QUANT_BITS.get(q, 16.0))
    failing = [q for q in wanted if q in mine and q not in passing]
    if not quant:
        rest = [q for q in wanted if q not in passing and q not in failing]
        wanted = [*passing, *rest, *failing]
    candidates = []
    for q in wanted:
        shape = model.shape(q)
        plan = RunPlan(model_path=Path(model.repo) / q, n_ctx=n_ctx)
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
    score = model.params_b * _quality(q, task, measured_ok=q in passing)
    if task in model.tasks and "chat" not in model.tasks:
        score *= 1.5  # a specialist beats a generalist of its size at its task
    score *= min(1.0, speed.tokens_per_s / FAST_TOKENS_PER_S)
    return Choice(
        model=model,
        quant=q,
        estimate=est,
        fit=fit,
        speed=speed,
        download_bytes=shape.weight_bytes,
        reason=reason,
        score=score,
        measured=mine.get(q),
        meets_budget=(q in passing) if q in mine else None,
    )


def _rank_key(c: Choice, signed_in: bool = True):
    fit_rank = {COMFORTABLE: 0, TIGHT: 1, NO_FIT: 2}[c.fit.label]
    locked = c.model.gated and not signed_in  # cannot be pulled yet: never first
    if c.fit.fits and c.slow:  # slower than reading: the quicker the better
        return (fit_rank, locked, True, -c.speed.tokens_per_s, -c.score)
    return (fit_rank, locked, False, -c.score, -c.speed.tokens_per_s)


def recommend(
    catalog: dict[str, CatalogModel],
    device: Device,
    task: str = "chat",
    n_ctx: int = 4096,
    cpu_gb_s: float = 25.0,
    signed_in: bool = True,
    measured: Mapping[str, Figures] | None = None,
) -> list[Choice]:
    """Every catalog model suited to ``task``, best first, each at its best quant here.

    Without a hub token (``signed_in`` False) a gated model ranks below every open one
    that fits as well: it cannot be pulled until the user signs in. ``measured``: the
    user's receipts by ``ID:QUANT`` (models/receipts.py), which ``choose`` weighs.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task}; choose from {', '.join(TASKS)}")
    suited = [m for m in catalog.values() if task in m.tasks]
    if task == "chat":  # any instruct model chats; specialists only when nothing else
        suited = [m for m in catalog.values() if "chat" in m.tasks or "summarise" in m.tasks]
    choices = [
        choose(m, task, min(n_ctx, m.context), device, cpu_gb_s, measured=measured)
        for m in suited
    ]
    return sorted(choices, key=lambda c: _rank_key(c, signed_in))


def default_quant(catalog_id: str, device: Device | None = None, n_ctx: int = 4096) -> str:
    """The quant to pull when none is named: the recommender's choice for this device,
    for the model's first task, at ``n_ctx`` (the caller's configured context)."""
    from edgechat.facts.device import detect
    from edgechat.planning import catalog
    from edgechat.planning.speed import cpu_bandwidth

    model, _ = catalog.find(catalog_id)
    device = device or detect()
    return choose(model, model.tasks[0], n_ctx, device, cpu_bandwidth(device)).quant
