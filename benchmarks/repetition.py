"""Does a reply loop? The chat default for the repeat penalty, measured.

The same prompts and seeds with each penalty (over the last 64 tokens), the rest of
the chat defaults as shipped (temperature 0.7, top-k 40, top-p 0.95, min-p 0.05),
settings interleaved per prompt. For each: how many replies ran to the token cap
instead of ending, and the share of repeated 4-grams in the reply's tokens (0: none
repeated; a reply saying one sentence forty times is near 1).

    python benchmarks/repetition.py [--penalties 1.0,1.1] [--tokens 256] [--seeds 2]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgechat.llama.engine import Engine
from edgechat.planning.plan import RunPlan, Sampling

sys.path.insert(0, str(Path(__file__).parent))
from _models import models  # noqa: E402

PROMPTS = [
    "Tell me about the sea.",
    "What is the capital of France?",
    "Write a short poem about autumn.",
    "Explain what a CPU does.",
]


def repeated_4grams(tokens: list[int]) -> float:
    grams = [tuple(tokens[i : i + 4]) for i in range(len(tokens) - 3)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--penalties", default="1.0,1.1")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--model", choices=["smollm2", "gemma"], default="smollm2")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    penalties = [float(p) for p in args.penalties.split(",")]
    path = next(p for name, p in models().items() if args.model in name.lower())
    rows = {p: {"replies": 0, "hit_cap": 0, "repeated": []} for p in penalties}
    system = {"role": "system", "content": "You are a helpful assistant."}
    with Engine(RunPlan(path, n_ctx=2048, n_threads=args.threads)) as engine:
        for prompt in PROMPTS:
            for seed in range(1, args.seeds + 1):
                for p in penalties:
                    s = Sampling(repeat_penalty=p, seed=seed, max_tokens=args.tokens)
                    reply = engine.chat([system, {"role": "user", "content": prompt}], s)
                    text = reply.collect()
                    row = rows[p]
                    row["replies"] += 1
                    row["hit_cap"] += reply.stats.finish == "length"
                    tokens = engine.tokenize(text, add_special=False)
                    row["repeated"].append(repeated_4grams(tokens))
    result = []
    print(f"{'penalty':>8} {'replies':>8} {'hit the cap':>12} {'repeated 4-grams':>17}")
    for p, row in rows.items():
        mean = sum(row["repeated"]) / len(row["repeated"])
        print(f"{p:>8.2f} {row['replies']:>8} {row['hit_cap']:>12} {mean:>16.1%}")
        result.append(
            {"repeat_penalty": p, **{k: row[k] for k in ("replies", "hit_cap")}, "repeated": mean}
        )
    print(json.dumps({"model": path.name, "max_tokens": args.tokens, "rows": result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
