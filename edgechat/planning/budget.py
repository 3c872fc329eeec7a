"""How much quality a task may lose to quantisation: a budget over the figures that
`quality` and `shrink` measure against a higher-precision reference.

The defaults follow llama.cpp's published measurements on Llama-3-8B (wikitext):
Q4_K_M keeps a mean KLD near 0.03 and top-1 agreement near 94 %, Q5_K_M 0.012 and
97 %, Q3_K_M 0.10 and 90 %. Chat and summaries accept what Q4_K_M loses; code and
maths, where one wrong token breaks the answer, accept about what Q5_K_M loses, so
the verdict drops below 8 bits for them only when the user's own text says it holds.
Standard library only: the parser checks ``--budget`` with it at start-up.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

# name -> (field, words, is a ceiling (else a floor))
MEASURES = {
    "kld": ("kl_mean", "mean KLD", True),
    "p99": ("kl_p99", "KLD p99", True),
    "ppl": ("ppl_ratio", "PPL ratio", True),
    "top1": ("top1", "top-1", False),
}
EXAMPLE = "like --budget kld=0.05,top1=0.9 (ppl=1.05 or 5%, top1=0.9 or 90%, NAME=off)"


@dataclass(frozen=True)
class Figures:
    """What a quant lost against its reference on one text."""

    kl_mean: float
    kl_p99: float | None  # None where only the mean was recorded
    ppl_ratio: float  # quant's perplexity / reference's
    top1: float  # 0..1: how often both put the same token first

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Budget:
    """Limits on each figure; None: that figure is not judged."""

    task: str
    kl_mean: float | None = None
    kl_p99: float | None = None
    ppl_ratio: float | None = None
    top1: float | None = None
    custom: bool = False  # set from --budget rather than the task's default

    def failures(self, f: Figures) -> list[str]:
        """What ``f`` exceeds, in words ('mean KLD 0.081 > 0.06'); empty when it meets it."""
        out = []
        for key, (name, words, ceiling) in MEASURES.items():
            limit, value = getattr(self, name), getattr(f, name)
            if limit is None:
                continue
            if value is None or not math.isfinite(value):
                out.append(f"{words} not measured")
            elif ceiling and value > limit:
                out.append(f"{words} {_show(key, value)} > {_show(key, limit)}")
            elif not ceiling and value < limit:
                out.append(f"{words} {_show(key, value)} < {_show(key, limit)}")
        return out

    def meets(self, f: Figures) -> bool:
        return not self.failures(f)

    def describe(self) -> str:
        """'mean KLD <= 0.06, KLD p99 <= 0.6, PPL ratio <= 1.06, top-1 >= 90%'."""
        parts = []
        for key, (name, words, ceiling) in MEASURES.items():
            limit = getattr(self, name)
            if limit is not None:
                parts.append(f"{words} {'<=' if ceiling else '>='} {_show(key, limit)}")
        return ", ".join(parts) or "no limits"

    def as_dict(self) -> dict:
        return asdict(self)


def _show(key: str, value: float) -> str:
    if key == "top1":
        return f"{100 * value:.1f}%".replace(".0%", "%")
    if key == "ppl":
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return f"{value:.4g}"


DEFAULTS = {
    "chat": Budget("chat", kl_mean=0.06, kl_p99=0.6, ppl_ratio=1.06, top1=0.90),
    "summarise": Budget("summarise", kl_mean=0.06, kl_p99=0.6, ppl_ratio=1.06, top1=0.90),
    "code": Budget("code", kl_mean=0.015, kl_p99=0.15, ppl_ratio=1.015, top1=0.96),
    "math": Budget("math", kl_mean=0.015, kl_p99=0.15, ppl_ratio=1.015, top1=0.96),
}


def default(task: str) -> Budget:
    return DEFAULTS.get(task, DEFAULTS["chat"])


def parse(text: str, task: str = "chat") -> Budget:
    """``kld=0.05,top1=0.9``: the task's default budget with these limits changed;
    ValueError(one line) for anything else."""
    budget = replace(default(task), custom=True)
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError(f"the budget is empty; give limits {EXAMPLE}")
    changes: dict[str, float | None] = {}
    for item in items:
        key, sep, raw = (part.strip() for part in item.partition("="))
        key = key.lower()
        if key not in MEASURES:
            raise ValueError(f"'{key}' is not a measure: use kld, p99, ppl or top1, {EXAMPLE}")
        if not sep or not raw:
            raise ValueError(f"'{item}' has no value: {EXAMPLE}")
        changes[MEASURES[key][0]] = _value(key, raw)
    return replace(budget, **changes)


def _value(key: str, raw: str) -> float | None:
    if raw.lower() in ("off", "none", "-"):
        return None
    percent = raw.endswith("%")
    try:
        value = float(raw.rstrip("%"))
    except ValueError:
        raise ValueError(f"{key}={raw} is not a number: {EXAMPLE}") from None
    if not math.isfinite(value):
        raise ValueError(f"{key}={raw} is not a finite number: {EXAMPLE}")
    if key == "top1":
        value = value / 100 if percent else value
        if not 0 < value <= 1:
            raise ValueError(f"top1={raw}: top-1 agreement lies between 0 and 1 (or 100%)")
    elif key == "ppl":
        value = 1 + value / 100 if percent else value
        if value < 1:
            raise ValueError(f"ppl={raw}: the perplexity ratio is 1 or more (like 1.05, or 5%)")
    else:
        if percent or value <= 0:
            raise ValueError(f"{key}={raw}: a KL divergence limit is a number above 0")
    return value
