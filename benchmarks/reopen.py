"""Reopening a long conversation: time to the first token of the next reply, with the
KV snapshot restored (llama_state_seq_load_file) against reading the history again.

The same ~2,000-token conversation, the same next message, greedy, one token of reply
(time to first token is what reopening costs); rounds alternate (re-read, snapshot,
re-read, snapshot ...) in one run, so drift hits both alike. The snapshot time counts
everything from the reopen: the checks (plan key, checksum), the load, and the
evaluation of what is new. Target: the snapshot path takes <= 10 % of re-reading.

    python benchmarks/reopen.py [--rounds 5] [--tokens 2000] [--model smollm2|gemma]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from edgechat.llama.engine import Engine
from edgechat.llama.state import Snapshots
from edgechat.planning.plan import RunPlan, Sampling

sys.path.insert(0, str(Path(__file__).parent))
from _models import models  # noqa: E402

TURN = (
    "Tell me more about the harbour: its ships, the people who work there, the tides, "
    "the old lighthouse and the market on the quay. "
)
REPLY = (
    "The harbour is busy from dawn. Fishing boats come in with the tide, the crews sort "
    "their catch on the quay, and traders from the market bargain over crates of fish. "
    "The old lighthouse still turns at night, though ships now steer by satellite. "
)
NEXT = {"role": "user", "content": "Thank you. Now sum it up in one sentence."}
ONE = Sampling(temperature=0, max_tokens=1)


def conversation(engine: Engine, target: int) -> list[dict]:
    """User and assistant turns until the prompt is about ``target`` tokens."""
    chat = [{"role": "system", "content": "You are a helpful assistant."}]
    while len(engine.prompt_tokens(chat)) < target:
        chat += [{"role": "user", "content": TURN * 2}, {"role": "assistant", "content": REPLY}]
    return chat


def reread(engine: Engine, chat: list[dict]) -> float:
    engine.clear_cache()
    t0 = time.perf_counter()
    engine.chat([*chat, NEXT], ONE).collect()
    return time.perf_counter() - t0


def from_snapshot(engine: Engine, snaps: Snapshots, chat: list[dict]) -> tuple[float, int]:
    engine.clear_cache()
    t0 = time.perf_counter()
    restored = snaps.restore(engine, 1)
    assert restored.why == "restored", restored
    engine.chat([*chat, NEXT], ONE).collect()
    return time.perf_counter() - t0, engine.last_stats.prompt_eval_tokens


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=2000, help="conversation length")
    ap.add_argument("--model", choices=["smollm2", "gemma"], default="smollm2")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print only the JSON")
    args = ap.parse_args()
    path = next(p for name, p in models().items() if args.model in name.lower())
    folder = Path(tempfile.mkdtemp(prefix="edgechat-reopen-"))
    plan = RunPlan(path, n_ctx=4096, n_threads=args.threads)
    with Engine(plan) as engine:
        chat = conversation(engine, args.tokens)
        n_chat = len(engine.prompt_tokens(chat))
        # What the app does after the last reply of a conversation: save the context.
        engine.chat(chat, ONE).collect()
        snaps = Snapshots(folder)
        size = snaps.save(engine, 1)
        reread(engine, chat)  # warm both paths once
        from_snapshot(engine, snaps, chat)
        slow, fast, evaluated = [], [], 0
        for _ in range(args.rounds):
            slow.append(reread(engine, chat))
            seconds, evaluated = from_snapshot(engine, snaps, chat)
            fast.append(seconds)
    result = {
        "model": path.name,
        "conversation_tokens": n_chat,
        "snapshot_bytes": size,
        "rounds": args.rounds,
        "reread_ttft_s": round(statistics.median(slow), 4),
        "snapshot_ttft_s": round(statistics.median(fast), 4),
        "snapshot_evaluated_tokens": evaluated,
        "ratio": round(statistics.median(fast) / statistics.median(slow), 4),
        "reread_all_s": [round(s, 4) for s in slow],
        "snapshot_all_s": [round(s, 4) for s in fast],
    }
    if not args.json:
        print(f"model {path.name}, conversation {n_chat} tokens, snapshot {size / 2**20:.1f} MiB")
        print(f"{'reopen by':<22}{'TTFT (median)':>14}")
        print(f"{'re-reading history':<22}{result['reread_ttft_s']:>13.3f}s")
        print(f"{'KV snapshot':<22}{result['snapshot_ttft_s']:>13.3f}s")
        print(f"ratio {result['ratio']:.1%} (target <= 10 %)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
