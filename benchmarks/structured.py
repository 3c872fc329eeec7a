"""Structured output's cost: tokens/s of a reply constrained by a JSON schema against a
free reply to the same prompt and length, at 1 and 4 clients at once, on `edgechat serve`
and on llama-server with the same schema (``response_format`` json_schema on both), side
by side in one run (the servers alternate per client count, so drift hits both alike).

The schema asks for a list of at least 16 small records, so a constrained reply runs to
``--tokens`` as a free one does; the free request has the same prompt (the schema is in
it) and the same cap. Rows: per-client tok/s (median of the clients' own rates), total
tok/s (all tokens over the wall time), and for constrained replies how many of those
the model ended itself parse and validate (one cut at ``--tokens`` is unfinished JSON).
Target (issue 32): constrained >= 0.9x free, and >= llama-server constrained.

    python benchmarks/structured.py [--model PATH] [--clients 1,4] [--tokens 160]
        [--ctx 1024] [--threads N] [--llama-server PATH] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import llama_server, model_of, sse  # noqa: E402
from support.serving import edgechat_serve  # noqa: E402

from edgechat.models import registry  # noqa: E402
from edgechat.planning.plan import physical_cores  # noqa: E402

SCHEMA = {
    "type": "object",
    "properties": {
        "animals": {
            "type": "array",
            "minItems": 16,
            "maxItems": 40,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 16},
                    "legs": {"type": "integer", "minimum": 0, "maximum": 8},
                    "habitat": {"enum": ["land", "sea", "air"]},
                },
                "required": ["name", "legs", "habitat"],
            },
        }
    },
    "required": ["animals"],
}
NOTE = f"Answer with one JSON object that matches this JSON schema: {json.dumps(SCHEMA)}"


def messages(i: int) -> list[dict]:
    return [
        {"role": "system", "content": NOTE},
        {"role": "user", "content": f"List animals you know (list {i + 1})."},
    ]


def stream(url: str, model: str, i: int, tokens: int, constrained: bool, barrier) -> dict:
    where = urllib.parse.urlsplit(url)
    body = {
        "model": model,
        "messages": messages(i),
        "max_tokens": tokens,
        "temperature": 0.7,
        "seed": 11 + i,
        "repeat_penalty": 1.0,
        "stream": True,
    }
    if constrained:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "animals", "schema": SCHEMA},
        }
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=900)
    barrier.wait()
    t0 = time.perf_counter()
    first = last = None
    text = []
    finish = None
    try:
        for chunk in sse(conn, url, body):
            choices = chunk.get("choices") or [{}]
            finish = choices[0].get("finish_reason") or finish
            piece = (choices[0].get("delta") or {}).get("content")
            if piece:
                last = time.perf_counter()
                first = first or last
                text.append(piece)
    finally:
        conn.close()
    n = len(text)  # streamed pieces: one a token on both servers
    return {
        "tokens": n,
        "tps": (n - 1) / (last - first) if n > 1 and last > first else 0.0,
        "t0": t0,
        "end": last or time.perf_counter(),
        "text": "".join(text),
        "finish": finish,
    }


def valid(text: str) -> bool:
    try:
        import jsonschema

        jsonschema.validate(json.loads(text), SCHEMA)
        return True
    except Exception:
        return False


def measure(url: str, n: int, tokens: int, constrained: bool) -> dict:
    model = model_of(url)
    barrier = threading.Barrier(n)
    with ThreadPoolExecutor(n) as pool:
        runs = list(
            pool.map(lambda i: stream(url, model, i, tokens, constrained, barrier), range(n))
        )
    wall = max(r["end"] for r in runs) - min(r["t0"] for r in runs)
    return {
        "per_client_tok_s": round(statistics.median(r["tps"] for r in runs), 2),
        "total_tok_s": round(sum(r["tokens"] for r in runs) / wall, 2),
        "tokens": [r["tokens"] for r in runs],
        # A reply cut at --tokens is unfinished JSON on either server: validity is
        # counted among the replies the model ended itself.
        "ended": sum(r["finish"] == "stop" for r in runs),
        "valid": sum(valid(r["text"]) for r in runs) if constrained else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=registry.starter_model_path())
    ap.add_argument("--clients", default="1,4")
    ap.add_argument("--tokens", type=int, default=160)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument("--llama-server", help="llama-server binary, beside edgechat")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    home = os.environ.get("EDGECHAT_HOME") or tempfile.mkdtemp(prefix="bench-structured-")
    out: dict = {"model": str(args.model), "tokens": args.tokens, "threads": args.threads}
    for n in (int(x) for x in args.clients.split(",")):
        servers = {
            "edgechat": lambda n=n: edgechat_serve(
                args.model,
                "--ctx",
                str(args.ctx),
                "--parallel",
                str(n),
                "--threads",
                str(args.threads),
                "--quiet",
                env={"EDGECHAT_HOME": home},
            )
        }
        if args.llama_server:
            servers["llama-server"] = lambda n=n: llama_server(
                args.llama_server, args.model, n, args.ctx, args.threads
            )
        for kind, start in servers.items():
            srv = start()
            try:
                measure(srv.url, 1, 8, False)  # warm: first decode, the grammar's tokenizer
                measure(srv.url, 1, 8, True)
                for mode in ("free", "constrained", "free", "constrained"):
                    row = measure(srv.url, n, args.tokens, mode == "constrained")
                    out.setdefault(f"{kind} x{n}", {}).setdefault(mode, []).append(row)
            finally:
                srv.stop()
    ratios = {}
    for key, modes in out.items():
        if not isinstance(modes, dict):
            continue
        free = statistics.median(r["per_client_tok_s"] for r in modes["free"])
        held = statistics.median(r["per_client_tok_s"] for r in modes["constrained"])
        ratios[f"{key} constrained/free"] = round(held / free, 3) if free else None
        n = key.split(" x")[1]
        other = out.get(f"llama-server x{n}")
        if key.startswith("edgechat") and isinstance(other, dict):
            theirs = statistics.median(r["per_client_tok_s"] for r in other["constrained"])
            ratios[f"edgechat/llama-server constrained x{n}"] = round(held / theirs, 3)
    out["ratios"] = ratios
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{'server':<18} {'mode':<12} {'tok/s each':>10} {'tok/s all':>10} {'valid/ended':>12}")
    for key, modes in out.items():
        if isinstance(modes, dict) and key != "ratios":
            for mode, rows in modes.items():
                for r in rows:
                    ok = "" if r["valid"] is None else f"{r['valid']}/{r['ended']}"
                    print(
                        f"{key:<18} {mode:<12} {r['per_client_tok_s']:>10} "
                        f"{r['total_tok_s']:>10} {ok:>12}"
                    )
    for name, value in ratios.items():
        print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
