"""`edgechat bench`: load time, prompt and generation speed, TTFT and peak memory of
each model, as medians of repeated runs in fresh processes, side by side."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass

from edgechat.planning.plan import RunPlan

FIELDS = ("load_s", "prompt_tokens_per_s", "gen_tokens_per_s", "ttft_s", "rss_peak")


@dataclass(frozen=True)
class BenchResult:
    model: str
    path: str
    runs: int
    n_ctx: int
    n_gpu_layers: int
    prompt_tokens: int
    gen_tokens: int
    load_s: float
    prompt_tokens_per_s: float
    gen_tokens_per_s: float
    ttft_s: float
    rss_peak: int

    def as_dict(self) -> dict:
        return asdict(self)


def bench(
    models: list[tuple[str, RunPlan]],
    repeat: int = 3,
    gen_tokens: int = 128,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[BenchResult]:
    """Each model's plan (from ``service.plan_model``, as a chat would load it) ``repeat``
    times, each run a fresh process: a quarter of the context as prompt, then
    ``gen_tokens`` generated greedily. Medians of every figure."""
    from edgechat.lab.measure import measure

    results = []
    for label, plan in models:
        runs = []
        for i in range(repeat):
            if progress:
                progress(label, i + 1, repeat)
            runs.append(measure(plan, fill=0.25, gen_tokens=gen_tokens))

        def median(key: str, runs: list[dict] = runs) -> float:
            return statistics.median(r[key] for r in runs)

        results.append(
            BenchResult(
                model=label,
                path=str(plan.model_path),
                runs=repeat,
                n_ctx=runs[0]["n_ctx"],
                n_gpu_layers=plan.n_gpu_layers,
                prompt_tokens=int(median("prompt_tokens")),
                gen_tokens=int(median("gen_tokens")),
                load_s=median("load_s"),
                prompt_tokens_per_s=median("prompt_tokens_per_s"),
                gen_tokens_per_s=median("gen_tokens_per_s"),
                ttft_s=median("ttft_s"),
                rss_peak=int(median("rss_peak")),
            )
        )
    return results
