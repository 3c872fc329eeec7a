"""Serving speed: `edgechat serve` on loopback against the bare engine, in one run.

- ``engine``: ``Engine.chat`` in this process, streamed, as the plain chat uses it;
- ``served x1``: one client streaming the same chat from `edgechat serve` (a child
  process, same model, context and threads) through the official openai client;
- ``served xN``: N clients at once; each one's rate, and all tokens over the wall time.

The engine and the single client alternate, so drift hits both alike. Rates are
(tokens - 1) / (last token - first token), as ``Stats.gen_tps``; tokens are the
server's own usage counts. The two must match token for token at temperature 0.

With ``--soak N`` it then sends N more short streamed requests from 20 clients at once
(some cancelled half-way, as real clients do) and prints the server's RSS along the way:
it should stay flat.

    python benchmarks/serve.py [--tokens 128] [--clients 4] [--repeat 3] [--threads N]
                               [--soak 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from serving import edgechat_serve  # noqa: E402

from edgechat.llama.engine import Engine  # noqa: E402
from edgechat.models import registry  # noqa: E402
from edgechat.planning.plan import RunPlan, Sampling, physical_cores  # noqa: E402

MESSAGES = [{"role": "user", "content": "Count from 1 to 500, separated by commas."}]


def engine_run(engine: Engine, tokens: int) -> dict:
    reply = engine.chat(MESSAGES, Sampling(temperature=0.0, max_tokens=tokens))
    text = reply.collect()
    s = reply.stats
    return {"tokens": s.gen_tokens, "tps": s.gen_tps, "ttft_s": s.ttft_s, "text": text}


def client_run(client, model: str, tokens: int) -> dict:
    t0 = time.perf_counter()
    first = last = None
    text, used = [], None
    stream = client.chat.completions.create(
        model=model,
        messages=MESSAGES,
        max_tokens=tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    server_tps = None
    for chunk in stream:
        if chunk.usage is not None:
            used = chunk.usage.completion_tokens
        timings = (chunk.model_extra or {}).get("timings")
        if timings:
            server_tps = timings["predicted_per_second"]
        if chunk.choices and chunk.choices[0].delta.content:
            last = time.perf_counter()
            first = first or last
            text.append(chunk.choices[0].delta.content)
    n = used or len(text)
    span = (last - first) if first and last else 0.0
    return {
        "tokens": n,
        "tps": (n - 1) / span if n > 1 and span > 0 else 0.0,
        "ttft_s": (first - t0) if first else 0.0,
        "wall_s": time.perf_counter() - t0,
        "server_tps": server_tps,
        "text": "".join(text),
    }


def soak(client, model: str, pid: int, n: int) -> dict:
    """N short streamed requests, 20 at a time, every fifth abandoned after one chunk."""
    import psutil

    proc = psutil.Process(pid)
    rss = [proc.memory_info().rss]
    done = {"answered": 0, "abandoned": 0, "refused": 0}
    lock = threading.Lock()

    def count(what: str) -> None:
        with lock:
            done[what] += 1

    def one(i: int) -> None:
        try:
            stream = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": f"Say something about the number {i}."}],
                max_tokens=6,
                stream=True,
            )
            for j, _ in enumerate(stream):
                if i % 5 == 0 and j == 1:
                    stream.close()
                    count("abandoned")
                    return
            count("answered")
        except Exception as exc:  # a 503 from a full queue is an answer too
            if getattr(exc, "status_code", None) == 503:
                count("refused")
            else:
                raise

    step = max(1, n // 4)
    with ThreadPoolExecutor(20) as pool:
        for start in range(0, n, step):
            list(pool.map(one, range(start, min(n, start + step))))
            rss.append(proc.memory_info().rss)
    return {"requests": n, **done, "rss_mib": [round(r / 2**20, 1) for r in rss]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a GGUF file (default: the starter model)")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--soak", type=int, default=0, metavar="N")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import openai

    model_path = args.model or registry.starter_model_path()
    server = edgechat_serve(
        model_path, "--ctx", str(args.ctx), "--threads", str(args.threads), "--quiet"
    )
    engine = Engine(RunPlan(model_path, n_ctx=args.ctx, n_threads=args.threads))
    rows: dict[str, list[dict]] = {"engine": [], "served x1": [], f"served x{args.clients}": []}
    try:
        client = openai.OpenAI(base_url=server.url, api_key="none", max_retries=0)
        model = client.models.list().data[0].id
        engine_run(engine, 8)  # warm both
        client_run(client, model, 8)
        for _ in range(args.repeat):
            rows["engine"].append(engine_run(engine, args.tokens))
            rows["served x1"].append(client_run(client, model, args.tokens))
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            many = list(
                pool.map(lambda _: client_run(client, model, args.tokens), range(args.clients))
            )
        wall = time.perf_counter() - t0
        rows[f"served x{args.clients}"] = many
        soaked = soak(client, model, server.proc.pid, args.soak) if args.soak else None
    finally:
        engine.close()
        server.stop()

    same = all(r["text"] == rows["engine"][0]["text"] for r in rows["served x1"])
    out = {
        "model": model_path.name,
        "threads": args.threads,
        "tokens": args.tokens,
        "repeat": args.repeat,
        "same_text_as_engine": same,
        "rows": {},
    }
    for name, runs in rows.items():
        tps = [r["tps"] for r in runs]
        out["rows"][name] = {
            "tok_s_per_client": round(statistics.median(tps), 1),
            "ttft_s": round(statistics.median(r["ttft_s"] for r in runs), 3),
            "runs": [round(x, 1) for x in tps],
        }
    n_total = sum(r["tokens"] for r in many)
    out["rows"][f"served x{args.clients}"]["tok_s_total"] = round(n_total / wall, 1)
    out["rows"][f"served x{args.clients}"]["tok_s_per_client_wall"] = round(
        statistics.median(r["tokens"] / r["wall_s"] for r in many), 1
    )
    if soaked:
        out["soak"] = soaked
    out["rows"]["served x1"]["server_side_tok_s"] = round(
        statistics.median(r["server_tps"] or 0 for r in rows["served x1"]), 1
    )
    e = out["rows"]["engine"]["tok_s_per_client"]
    out["served_x1_vs_engine"] = round(out["rows"]["served x1"]["tok_s_per_client"] / e, 3)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{out['model']} · {args.threads} threads · {args.tokens} tokens · {args.repeat} runs")
    print(f"{'':14} {'tok/s/client':>13} {'first token s':>14} {'total tok/s':>12}")
    for name, r in out["rows"].items():
        total = r.get("tok_s_total", r["tok_s_per_client"])
        print(f"{name:14} {r['tok_s_per_client']:>13.1f} {r['ttft_s']:>14.3f} {total:>12.1f}")
    print(
        f"server's own rate (timings) for x1: {out['rows']['served x1']['server_side_tok_s']}"
        f" tok/s · one streamed client / bare engine: {out['served_x1_vs_engine']:.1%}"
        f" · same text: {'yes' if same else 'NO'}"
    )
    if soaked:
        print(
            f"soak: {soaked['requests']} requests, {soaked['answered']} answered, "
            f"{soaked['abandoned']} abandoned, {soaked['refused']} refused · server RSS MiB "
            + " -> ".join(str(x) for x in soaked["rss_mib"])
        )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
