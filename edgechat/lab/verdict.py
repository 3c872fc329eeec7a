"""Which candidate `shrink` names: a pure function over the figures it recorded, so the
rule is tested without a model.

The rule: the smallest file that meets the task's quality budget and fits this machine.
Ties go to the lower KL divergence. When none qualifies, no pick, and why: what the
closest candidate missed, or that what meets the budget does not fit here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from edgechat.facts.device import format_size
from edgechat.planning.budget import Budget, Figures

# Default types per task, largest first. Code and maths start at 8 bits and go down
# only as far as 4 (the advice this project was founded on); chat and summaries go
# down to 2 bits, since the budget, not the list, decides.
TYPES_BY_TASK = {
    "code": ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M"),
    "math": ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M"),
    "chat": ("Q6_K", "Q5_K_M", "Q4_K_M", "IQ4_XS", "Q3_K_M", "Q2_K"),
    "summarise": ("Q6_K", "Q5_K_M", "Q4_K_M", "IQ4_XS", "Q3_K_M", "Q2_K"),
}
# Types whose quantisation ignores an importance matrix: one candidate each, not two.
MATRIX_IGNORED = frozenset({"Q8_0", "F16", "BF16", "F32"})


@dataclass(frozen=True)
class Candidate:
    """What was recorded for one candidate quant."""

    id: str  # Q4_K_M, Q4_K_M+imatrix
    type: str
    imatrix: bool
    size: int  # file bytes
    bits_per_weight: float
    figures: Figures | None  # None: it could not be scored
    fits: bool  # at the context it would run at, on this machine
    fit_label: str = ""
    fit_why: str = ""
    ram_needed: int | None = None
    vram: int | None = None
    tokens_per_s: float | None = None
    path: str | None = None

    def as_dict(self) -> dict:
        d = asdict(self)
        d["figures"] = self.figures.as_dict() if self.figures else None
        return d


@dataclass(frozen=True)
class Verdict:
    pick: str | None  # the chosen candidate's id
    why: str
    budget: Budget
    misses: dict[str, tuple[str, ...]]  # id -> what it misses (empty: meets the budget)

    def as_dict(self) -> dict:
        return {
            "pick": self.pick,
            "why": self.why,
            "budget": {**self.budget.as_dict(), "words": self.budget.describe()},
            "misses": {k: list(v) for k, v in self.misses.items()},
        }


def candidate_ids(types: Sequence[str], needs_matrix: frozenset[str] = frozenset()) -> list:
    """(id, type, with matrix) for each type: without and with the matrix, the matrix
    variant alone for types that need one, the plain one alone for types that ignore it."""
    out = []
    for t in types:
        if t not in needs_matrix:
            out.append((t, t, False))
        if t not in MATRIX_IGNORED:
            out.append((f"{t}+imatrix", t, True))
    return out


def pick(candidates: Sequence[Candidate], budget: Budget, source: str = "the source") -> Verdict:
    """The smallest candidate within ``budget`` that fits here, and why."""
    misses = {
        c.id: tuple(budget.failures(c.figures) if c.figures else ["not measured"])
        for c in candidates
    }
    meets = [c for c in candidates if c.figures and not misses[c.id]]
    ok = sorted((c for c in meets if c.fits), key=lambda c: (c.size, c.figures.kl_mean))
    task = budget.task
    if ok:
        best = ok[0]
        f = best.figures
        why = (
            f"{best.id} is the smallest candidate ({format_size(best.size)}, "
            f"{best.bits_per_weight:.2f} bits a weight) within the {task} budget "
            f"(mean KLD {f.kl_mean:.4g}, top-1 {100 * f.top1:.1f}%, PPL x{f.ppl_ratio:.3f})"
            f" and fits here ({best.fit_label}{': ' + best.fit_why if best.fit_why else ''})"
        )
        twin = next((c for c in candidates if c.type == best.type and c is not best), None)
        if twin is not None and misses[twin.id]:  # what the matrix did, or failed to do
            words = "with" if twin.imatrix else "without"
            why += f"; {words} the matrix it misses: {'; '.join(misses[twin.id])}"
        smaller = [c for c in candidates if c.size < best.size and c.type != best.type]
        if smaller:
            near = min(smaller, key=lambda c: (-c.size, c.figures.kl_mean if c.figures else 1e9))
            reason = "; ".join(misses[near.id]) or (
                f"it does not fit here ({near.fit_why})" if not near.fits else ""
            )
            why += f"; the next smaller, {near.id}, misses it: {reason}" if reason else ""
        return Verdict(best.id, why, budget, misses)
    if meets:
        small = min(meets, key=lambda c: c.size)
        why = (
            f"{small.id} meets the {task} budget but does not fit this machine "
            f"({small.fit_why or small.fit_label}); nothing smaller meets it: keep {source} "
            "for a bigger machine, or loosen --budget"
        )
        return Verdict(None, why, budget, misses)
    scored = [c for c in candidates if c.figures]
    if not scored:
        return Verdict(None, "no candidate could be measured", budget, misses)
    closest = min(scored, key=lambda c: c.figures.kl_mean)
    why = (
        f"no candidate meets the {task} budget ({budget.describe()}); the closest, "
        f"{closest.id}, misses it: {'; '.join(misses[closest.id])}. Keep {source}, try "
        "higher-precision --types, or loosen --budget"
    )
    return Verdict(None, why, budget, misses)
