"""Threads on a busy machine: the default thread count against every fixed count.

llama.cpp's threads wait for each other at every step, so a thread on a core another
program holds slows them all. edgechat chooses the default when a model loads, from
the cores other programs leave free (planning/threads.py). This measures whether that
choice is right: generation speed of the default against ``--threads 1..N``, with the
machine idle and with one and two competing busy cores (busy-loop processes the
scheduler places where it likes, as other programs are).

Every engine of a scenario is loaded while its competing load runs (the default is
chosen then, as it would be), and the runs are interleaved, the order rotating each
round; the median of the rounds is reported. Target: the default within 10 % of the
best fixed count in every scenario. Figures mean something only on an otherwise quiet
machine; ratios side by side in one run are still worth a look on a busy one.

    python benchmarks/threads.py [--repeat 5] [--tokens 96] [--busy 0,1,2] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from edgechat.llama.engine import Engine
from edgechat.planning.plan import RunPlan, Sampling
from edgechat.planning.threads import usable_cores

sys.path.insert(0, str(Path(__file__).parent))
from _models import models  # noqa: E402

PROMPT = "Write a long, detailed story about a lighthouse keeper who befriends a whale."
SPIN = "while True:\n    pass\n"
TARGET = 0.9


@contextmanager
def competing(n: int):
    """``n`` busy-loop processes, unpinned, for as long as the block runs."""
    procs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(n)]
    try:
        time.sleep(0.5 if n else 0)  # let them start spinning before anything is chosen
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def tokens_per_s(engine: Engine, n_tokens: int) -> tuple[float, int]:
    """Generation rate of one reply (its own stats), and how many tokens it had."""
    engine.clear_cache()  # every reply starts cold, from the same prompt
    reply = engine.chat(
        [{"role": "user", "content": PROMPT}],
        Sampling(temperature=0.7, seed=1234, max_tokens=n_tokens),
    )
    reply.collect()
    return reply.stats.gen_tps, reply.stats.gen_tokens


def scenario(path: Path, busy: int, counts: list[int], repeat: int, n_tokens: int) -> dict:
    """One competing load: the default's choice and everyone's median rate."""
    with competing(busy):
        engines = {"default": Engine(RunPlan(path, n_ctx=512))}
        engines |= {str(k): Engine(RunPlan(path, n_ctx=512, n_threads=k)) for k in counts}
        try:
            rates: dict[str, list[float]] = {name: [] for name in engines}
            short = 0
            names = list(engines)
            for r in range(repeat):
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    tps, n = tokens_per_s(engines[name], n_tokens)
                    rates[name].append(tps)
                    short += n < n_tokens // 2
            choice = engines["default"].threads
        finally:
            for engine in engines.values():
                engine.close()
    medians = {name: statistics.median(v) for name, v in rates.items()}
    fixed = {k: medians[str(k)] for k in counts}
    best = max(fixed, key=fixed.get)
    ratio = medians["default"] / fixed[best] if fixed[best] else 0.0
    return {
        "busy_cores": busy,
        "default_threads": choice.threads if choice else None,
        "default_why": choice.why if choice else "",
        "tok_s": {name: round(v, 1) for name, v in medians.items()},
        "best_fixed": best,
        "default_vs_best": round(ratio, 3),
        "within_target": ratio >= TARGET,
        "short_replies": short,
        "rounds": repeat,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="interleaved rounds (median)")
    ap.add_argument("--tokens", type=int, default=96, help="tokens per reply")
    ap.add_argument("--busy", default="0,1,2", help="competing busy cores per scenario")
    ap.add_argument(
        "--max-threads", type=int, default=0, help="fixed counts 1..N (default: usable cores)"
    )
    ap.add_argument("--model", type=Path, help="a GGUF (default: the starter, SmolLM2)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    path = args.model or next(iter(models().values()))
    counts = list(range(1, (args.max_threads or usable_cores()) + 1))
    results = []
    for busy in [int(b) for b in args.busy.split(",")]:
        print(f"{busy} busy core(s): {len(counts) + 1} engines, {args.repeat} rounds ...",
              file=sys.stderr)  # fmt: skip
        results.append(scenario(path, busy, counts, args.repeat, args.tokens))
    report = {"model": str(path), "usable_cores": usable_cores(), "scenarios": results}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    head = ["busy", "default (n)"] + [f"{k} thr" for k in counts] + ["best", "default/best"]
    print(f"{path.name}, tok/s (median of {args.repeat}), target: default >= 90 % of best")
    print("  ".join(f"{h:>12}" for h in head))
    for s in results:
        cells = [str(s["busy_cores"]), f"{s['tok_s']['default']:.1f} ({s['default_threads']})"]
        cells += [f"{s['tok_s'][str(k)]:.1f}" for k in counts]
        mark = "ok" if s["within_target"] else "MISSED"
        cells += [f"{s['best_fixed']} thr", f"{s['default_vs_best']:.0%} {mark}"]
        print("  ".join(f"{c:>12}" for c in cells))
    for s in results:
        if s["short_replies"]:
            print(f"note: {s['short_replies']} replies ended early at {s['busy_cores']} busy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
