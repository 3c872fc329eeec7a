"""Generation speed with the app streaming a reply on screen, beside the engine alone.

Same model, prompt, seed and greedy sampling, so both produce the same tokens;
rounds alternate (engine, app, engine, app ...) in one run. The app runs headless at
80x24 (Textual lays out and renders every update; only the terminal write is
skipped) on the same loaded engine, reading the speed the engine measured for
that reply. Target: the app
keeps 95 % or more of the engine's generation rate.

    python benchmarks/tui_overhead.py [--rounds 5] [--tokens 256] [--model smollm2|gemma]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edgechat.llama.engine import Engine
from edgechat.planning.plan import RunPlan, Sampling

sys.path.insert(0, str(Path(__file__).parent))
from _models import models  # noqa: E402

PROMPT = "Write a long, detailed story about a lighthouse keeper who befriends a whale."


def engine_alone(engine: Engine, tokens: int) -> float:
    engine.clear_cache()
    reply = engine.chat(
        [{"role": "user", "content": PROMPT}], Sampling(temperature=0, max_tokens=tokens)
    )
    reply.collect()
    return reply.stats.gen_tps


async def in_the_app(engine: Engine, llama: ThreadPoolExecutor, tokens: int) -> float:
    from edgechat.facts.readouts import Sampler
    from edgechat.tasks.conversations import Store
    from edgechat.tui.app import EdgechatApp, LaunchOptions

    engine.clear_cache()
    store = Store(Path(tempfile.mkdtemp(prefix="edgechat-bench-")) / "chats.db")  # a fresh chat
    app = EdgechatApp(
        LaunchOptions(start="chat"),
        store=store,
        sample_readouts=Sampler(),
        engine=engine,
        llama_thread=llama,
    )
    app.sampling = Sampling(temperature=0, max_tokens=tokens)
    async with app.run_test(size=(80, 24)) as pilot:
        while app.engine is None:
            await pilot.pause(0.05)
        screen = app.screen
        screen.conversation.system = ""
        await pilot.press(*PROMPT, "enter")
        await pilot.pause(0.2)
        while screen.generating:
            await pilot.pause(0.05)
        stats = app.engine.last_stats
    return stats.gen_tps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--model", choices=["smollm2", "gemma"], default="smollm2")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("EDGECHAT_HOME", tempfile.mkdtemp(prefix="edgechat-bench-"))
    path = [p for name, p in models().items() if args.model in name.lower()][0]
    engine_rates, app_rates = [], []
    # One thread for every llama.cpp call, for both, as the app does.
    llama = ThreadPoolExecutor(1, thread_name_prefix="llama")
    engine = llama.submit(Engine, RunPlan(path, n_ctx=4096)).result()
    llama.submit(engine_alone, engine, 16).result()  # warm up
    for _ in range(args.rounds):
        engine_rates.append(llama.submit(engine_alone, engine, args.tokens).result())
        app_rates.append(asyncio.run(in_the_app(engine, llama, args.tokens)))
    llama.submit(engine.close).result()
    ratios = [a / e for a, e in zip(app_rates, engine_rates, strict=True)]
    out = {
        "model": path.name,
        "tokens": args.tokens,
        "engine_tok_s": [round(x, 1) for x in engine_rates],
        "app_tok_s": [round(x, 1) for x in app_rates],
        "median_engine": round(statistics.median(engine_rates), 1),
        "median_app": round(statistics.median(app_rates), 1),
        "median_ratio_pct": round(100 * statistics.median(ratios), 1),
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:<17} {v}")
        met = out["median_ratio_pct"] >= 95
        print(f"target: the app keeps >= 95 % of the engine's rate: {'met' if met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
