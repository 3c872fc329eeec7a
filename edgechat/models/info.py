"""What is known about one model before loading it: its catalog entry, its header and
its memory estimate here (`edgechat models info`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgechat.facts.device import Device
    from edgechat.models.receipts import Receipt
    from edgechat.models.target import Target
    from edgechat.planning.catalog import CatalogModel
    from edgechat.planning.fit import Fit
    from edgechat.planning.memory import MemoryEstimate


@dataclass(frozen=True)
class ModelInfo:
    target: Target
    installed: bool
    entry: CatalogModel | None
    estimate: MemoryEstimate
    fit: Fit
    receipts: tuple[Receipt, ...] = ()  # measured on the user's text, newest first

    def budgets(self) -> dict[str, list[str]]:
        """Per task, what the newest receipt misses of its default budget (empty: meets)."""
        from edgechat.planning.budget import DEFAULTS

        if not self.receipts:
            return {}
        figures = self.receipts[0].figures
        return {task: b.failures(figures) for task, b in DEFAULTS.items()}

    def as_dict(self) -> dict:
        facts = self.target.facts
        return {
            "model": self.target.label,
            "installed": self.installed,
            "catalog": self.entry.as_dict() if self.entry else None,
            "header": facts.as_dict() if facts else None,
            "estimate": {
                **self.estimate.as_dict(),
                "fit": self.fit.label,
                "fit_reason": self.fit.why or None,
            },
            "quality": [
                {**r.as_dict(), "summary": r.summary(), "budgets": self.budgets()}
                if i == 0
                else r.as_dict()
                for i, r in enumerate(self.receipts)
            ],
        }


def describe(
    text: str, n_ctx: int, default_model: str = "", device: Device | None = None, warn=None
):
    """``text`` (an installed id, a catalog ID[:QUANT] or a GGUF path) described here;
    ``warn`` hears of catalog entries left out."""
    from edgechat.facts.device import detect
    from edgechat.models import registry
    from edgechat.models.target import locate
    from edgechat.planning import catalog
    from edgechat.planning.fit import plan_for
    from edgechat.planning.plan import RunPlan

    target = locate(text, default_model)
    device = device or detect()
    est, fit = plan_for(RunPlan(target.path, n_ctx=n_ctx), target.shape, device, auto_gpu=True)
    records = registry.records()
    record = records.get(text)
    if record is None and target.source == "file":
        record = next((r for r in records.values() if r.get("path") == str(target.path)), None)
    models = catalog.load(warn=warn)
    entry = models.get(text.partition(":")[0].lower()) or next(
        (m for m in models.values() if record and m.repo == record.get("repo")), None
    )
    installed = record is not None or target.source == "file"
    found = ()
    if target.source == "file":
        from edgechat.models import receipts

        found = tuple(receipts.for_file(target.path))
    return ModelInfo(target, installed, entry, est, fit, found)
