"""Serving speed: `edgechat serve` with 1, 2, 4, 8 clients at once, beside llama-server
-np N on the same model, context per slot and threads, and the bare engine, in one run.

For each client count N, each server is started with N slots (``--parallel N``;
llama-server ``-np N -c N*ctx``, so each slot has ``--ctx``), then:

- ``together``: N streamed clients started at once, each with its own prompt, on a
  server that has not seen those prompts (so time to first token includes reading them);
- ``alone``: then the same N prompts one after the other, to compare the replies.

Rows: total tokens/s (all tokens over the wall time from the start to the last token),
each client's rate ((tokens - 1) / (last token - first token), median), time to first
token p50/p95 over the clients, and whether every reply together equals the same
prompt alone (greedy). The servers alternate per count, so drift hits both alike.

``engine``: ``Engine.chat`` in this process against one streamed client of `edgechat
serve`, alternating (a served reply should be as fast as a local one).
``--soak N``: N more short requests from ``--soak-clients`` clients (every fifth
abandoned after a piece), the server's RSS sampled along the way: it should stay flat.

    python benchmarks/serve.py [--clients 1,2,4,8] [--llama-server PATH] [--tokens 96]
        [--ctx 2048] [--threads N] [--rounds 1] [--soak 500] [--soak-clients 8] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _models  # noqa: E402, F401 - edgechat on its own llama.cpp, whatever LD_LIBRARY_PATH says
from support.serving import Server, edgechat_serve, free_port, ready  # noqa: E402

from edgechat.llama.engine import Engine  # noqa: E402
from edgechat.models import registry  # noqa: E402
from edgechat.planning.plan import RunPlan, Sampling, physical_cores  # noqa: E402

TOPICS = ["the sea", "Rome", "owls", "apples", "trains", "winter", "bread", "music", "bees"]


def prompt(i: int) -> list[dict]:
    """A different prompt for each client, whose greedy reply on SmolLM2 runs to the end
    of 96 tokens (counting prompts stopped after 9-73: a client that ends early leaves
    the others a smaller batch, and the total measured its absence)."""
    topic = TOPICS[i % len(TOPICS)] + (
        f" (part {i // len(TOPICS) + 1})" if i >= len(TOPICS) else ""
    )
    return [{"role": "user", "content": f"Write a long essay about {topic}."}]


def model_of(url: str) -> str:
    with urllib.request.urlopen(f"{url}/models", timeout=60) as r:
        return json.load(r)["data"][0]["id"]


def stream(url: str, model: str, messages: list[dict], tokens: int, barrier=None) -> dict:
    """One streamed chat completion, read with http.client: the clients share the cores
    with the server they measure, so they do as little as a client can (no pydantic
    model per chunk, as the official client builds)."""
    where = urllib.parse.urlsplit(url)
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": tokens,
        "temperature": 0,
        "repeat_penalty": 1.0,  # both servers' sampler alike (edgechat's default: 1.1)
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=600)
    if barrier is not None:
        barrier.wait()
    t0 = time.perf_counter()
    first = last = None
    text, used, server_tps = [], None, None
    try:
        for chunk in sse(conn, url, body):
            if chunk.get("timings"):  # both servers report their own rate here
                server_tps = chunk["timings"].get("predicted_per_second")
            if chunk.get("usage"):
                used = chunk["usage"]["completion_tokens"]
            choices = chunk.get("choices") or [{}]
            piece = (choices[0].get("delta") or {}).get("content")
            if piece:
                last = time.perf_counter()
                first = first or last
                text.append(piece)
    finally:
        conn.close()
    n = used or len(text)
    span = (last - first) if first and last else 0.0
    return {
        "tokens": n,
        "tps": (n - 1) / span if n > 1 and span > 0 else 0.0,
        "ttft_s": (first - t0) if first else 0.0,
        "server_tps": server_tps,
        "t0": t0,
        "end": last or time.perf_counter(),
        "text": "".join(text),
    }


def sse(conn: http.client.HTTPConnection, url: str, body: dict):
    """``body`` POSTed to ``url``'s /chat/completions on ``conn``: each chunk of the
    streamed reply, parsed, until [DONE]. Any answer but 200 ends the benchmark."""
    path = urllib.parse.urlsplit(url).path
    headers = {"Content-Type": "application/json"}
    conn.request("POST", f"{path}/chat/completions", json.dumps(body), headers)
    resp = conn.getresponse()
    if resp.status != 200:
        raise SystemExit(f"{url}: HTTP {resp.status}: {resp.read()[:500]!r}")
    for line in resp:
        if not line.startswith(b"data: "):
            continue
        data = line[6:].strip()
        if data == b"[DONE]":
            return
        yield json.loads(data)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def measure(url: str, n: int, tokens: int) -> dict:
    """N clients at once on a fresh server (their prompts not cached anywhere), then the
    same N prompts one after the other, to compare the replies."""
    model = model_of(url)
    stream(url, model, prompt(8), 8)  # warm: the first decode allocates
    barrier = threading.Barrier(n)
    with ThreadPoolExecutor(n) as pool:
        runs = list(pool.map(lambda i: stream(url, model, prompt(i), tokens, barrier), range(n)))
    alone = [stream(url, model, prompt(i), tokens) for i in range(n)]
    wall = max(r["end"] for r in runs) - min(r["t0"] for r in runs)
    ttft = [r["ttft_s"] for r in runs]
    return {
        "total_tok_s": sum(r["tokens"] for r in runs) / wall,
        "per_client_tok_s": statistics.median(r["tps"] for r in runs),
        "clients_tok_s": [round(r["tps"], 1) for r in runs],
        "ttft_p50_s": pct(ttft, 0.5),
        "ttft_p95_s": pct(ttft, 0.95),
        "same_as_alone": sum(r["text"] == a["text"] for r, a in zip(runs, alone, strict=True)),
        "alone_tok_s": statistics.median(a["tps"] for a in alone),
    }


def llama_server(binary: str, model: Path, n: int, ctx: int, threads: int) -> Server:
    port = free_port()
    env = {
        "LD_LIBRARY_PATH": os.pathsep.join(
            [str(Path(binary).parent), os.environ.get("LD_LIBRARY_PATH", "")]
        )
    }
    args = [binary, "-m", str(model), "-np", str(n), "-c", str(n * ctx), "-t", str(threads)]
    args += [
        "-tb",
        str(threads),
        "-b",
        "512",
        "-ub",
        "512",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    server = Server(args, env)
    server.url = f"http://127.0.0.1:{port}/v1"
    if ready(server, f"http://127.0.0.1:{port}/health", 120):
        return server
    raise SystemExit(f"llama-server did not start:\n{server.log[-2000:]}")


def engine_vs_one_client(
    model_path: Path, ctx: int, threads: int, tokens: int, rounds: int
) -> dict:
    server = edgechat_serve(
        model_path, "--ctx", str(ctx), "--threads", str(threads), "--parallel", "4", "--quiet"
    )
    engine = Engine(RunPlan(model_path, n_ctx=ctx, n_threads=threads))
    sampling = Sampling(temperature=0.0, max_tokens=tokens, repeat_penalty=1.0)
    eng, srv = [], []
    try:
        model = model_of(server.url)
        for _ in range(rounds + 1):  # the first of each warms up
            engine.clear_cache()
            reply = engine.chat(prompt(0), sampling)
            reply.collect()
            eng.append(reply.stats.gen_tps)
            srv.append(stream(server.url, model, prompt(0), tokens)["tps"])
    finally:
        engine.close()
        server.stop()
    e, s = statistics.median(eng[1:]), statistics.median(srv[1:])
    return {"engine_tok_s": round(e, 1), "one_client_tok_s": round(s, 1), "ratio": round(s / e, 3)}


def soak(model_path: Path, ctx: int, threads: int, n: int, clients: int) -> dict:
    """N short streamed requests from ``clients`` at a time, every fifth abandoned."""
    import openai
    import psutil

    server = edgechat_serve(
        model_path,
        "--ctx",
        str(ctx),
        "--threads",
        str(threads),
        "--parallel",
        str(min(clients, 8)),
        "--quiet",
    )
    try:
        proc = psutil.Process(server.proc.pid)
        client = openai.OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=600)
        model = client.models.list().data[0].id
        rss = []
        done = {"answered": 0, "abandoned": 0, "refused": 0}
        lock = threading.Lock()

        def one(i: int) -> None:
            what = "answered"
            try:
                chunks = client.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": f"Say something about the number {i}."}],
                    max_tokens=8,
                    stream=True,
                )
                for j, _ in enumerate(chunks):
                    if i % 5 == 0 and j == 1:
                        chunks.close()
                        what = "abandoned"
                        break
            except openai.APIStatusError as exc:
                if exc.status_code != 503:
                    raise
                what = "refused"
            with lock:
                done[what] += 1

        step = max(1, n // 10)
        with ThreadPoolExecutor(clients) as pool:
            for start in range(0, n, step):
                list(pool.map(one, range(start, min(n, start + step))))
                # The server's whole tree: its model lives in a runner process.
                tree = [proc, *proc.children(recursive=True)]
                rss.append(sum(p.memory_info().rss for p in tree))
    finally:
        server.stop()
    # The first tenth settles the allocators; flat means the rest stays within 5 % of it.
    growth = (max(rss[1:]) - rss[1]) / rss[1] if len(rss) > 2 else 0.0
    return {
        "requests": n,
        "clients": clients,
        **done,
        "rss_mib": [round(r / 2**20, 1) for r in rss],
        "growth_after_first_tenth": round(growth, 4),
    }


def show(out: dict, args) -> None:
    print(
        f"{out['model']} · ctx {args.ctx} a slot · {args.threads} threads · "
        f"{args.tokens} tokens · {args.rounds} round(s)"
    )
    head = ("clients", "server", "total tok/s", "tok/s each", "TTFT p50", "TTFT p95", "same")
    print("{:>7} {:<16} {:>11} {:>10} {:>9} {:>9} {:>5}  each client".format(*head))
    for r in out["rows"]:
        cells = (r["clients"], r["server"], r["total_tok_s"], r["per_client_tok_s"])
        cells += (r["ttft_p50_s"], r["ttft_p95_s"], r["same_as_alone"], r["clients_tok_s"])
        print("{:>7} {:<16} {:>11.1f} {:>10.1f} {:>9.3f} {:>9.3f} {:>5}  {}".format(*cells))
    for name, value in out["ratios"].items():
        print(f"{name}: {value:.2f}")
    if "engine" in out:
        e = out["engine"]
        print(f"one client {e['one_client_tok_s']} tok/s", end=" ")
        print(f"vs Engine.chat {e['engine_tok_s']}: {e['ratio']:.1%}")
    if "soak" in out:
        s = out["soak"]
        print(f"soak: {s['requests']} requests from {s['clients']} clients,", end=" ")
        print(f"{s['answered']} answered, {s['abandoned']} abandoned, {s['refused']} refused")
        print("  server RSS MiB " + " -> ".join(str(x) for x in s["rss_mib"]), end=" ")
        print(f"· growth after the first tenth {s['growth_after_first_tenth']:.1%}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a GGUF file (default: the starter model)")
    ap.add_argument("--clients", default="1,2,4,8", help="client counts (1,2,4,8)")
    ap.add_argument("--llama-server", help="llama-server binary, for its -np N beside edgechat")
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--ctx", type=int, default=2048, help="context of each slot")
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument("--rounds", type=int, default=1, help="runs of each count, alternating")
    ap.add_argument("--engine-rounds", type=int, default=3, help="0: skip the engine check")
    ap.add_argument("--soak", type=int, default=0, metavar="N")
    ap.add_argument("--soak-clients", type=int, default=8)
    ap.add_argument(
        "--exact", action="store_true", help="also edgechat serve --exact, beside the others"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    model_path = args.model or registry.starter_model_path()
    counts = [int(c) for c in args.clients.split(",")]
    kinds = ["edgechat"] + (["edgechat --exact"] if args.exact else [])
    kinds += ["llama-server"] if args.llama_server else []
    rows: dict[tuple[int, str], list[dict]] = {}
    for _ in range(args.rounds):
        for n in counts:
            for kind in kinds:
                if kind.startswith("edgechat"):
                    server = edgechat_serve(
                        model_path,
                        "--ctx",
                        str(args.ctx),
                        "--threads",
                        str(args.threads),
                        "--parallel",
                        str(n),
                        *kind.split()[1:],
                        "--quiet",
                    )
                else:
                    server = llama_server(args.llama_server, model_path, n, args.ctx, args.threads)
                try:
                    rows.setdefault((n, kind), []).append(measure(server.url, n, args.tokens))
                finally:
                    server.stop()
                print(f"measured {kind} x{n}", file=sys.stderr)
    table = []
    for (n, kind), runs in rows.items():
        row = {"clients": n, "server": kind}
        for key in ("total_tok_s", "per_client_tok_s", "ttft_p50_s", "ttft_p95_s", "alone_tok_s"):
            row[key] = round(statistics.median(r[key] for r in runs), 3 if "ttft" in key else 1)
        row["same_as_alone"] = f"{min(r['same_as_alone'] for r in runs)}/{n}"
        row["clients_tok_s"] = runs[-1]["clients_tok_s"]
        table.append(row)
    out = {
        "model": model_path.name,
        "ctx_per_slot": args.ctx,
        "threads": args.threads,
        "tokens": args.tokens,
        "rounds": args.rounds,
        "rows": table,
    }

    def total(n: int, kind: str) -> float | None:
        return next(
            (r["total_tok_s"] for r in table if r["clients"] == n and r["server"] == kind), None
        )

    def p95(n: int) -> float | None:
        return next(
            (r["ttft_p95_s"] for r in table if r["clients"] == n and r["server"] == "edgechat"),
            None,
        )

    ratios = {}
    for n in counts:
        if total(n, "llama-server"):
            ratios[f"edgechat/llama-server total x{n}"] = round(
                total(n, "edgechat") / total(n, "llama-server"), 3
            )
        if total(n, "edgechat --exact"):
            ratios[f"edgechat --exact/edgechat total x{n}"] = round(
                total(n, "edgechat --exact") / total(n, "edgechat"), 3
            )
        if n > 1 and total(1, "edgechat"):
            ratios[f"edgechat x{n} / x1 total"] = round(
                total(n, "edgechat") / total(1, "edgechat"), 3
            )
            ratios[f"edgechat TTFT p95 x{n} / x1"] = round(p95(n) / p95(1), 3)
    out["ratios"] = ratios
    if args.engine_rounds:
        out["engine"] = engine_vs_one_client(
            model_path, args.ctx, args.threads, args.tokens, args.engine_rounds
        )
    if args.soak:
        out["soak"] = soak(model_path, args.ctx, args.threads, args.soak, args.soak_clients)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    show(out, args)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
