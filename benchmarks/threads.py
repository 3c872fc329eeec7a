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

``--server``: a server whose machine gets busy and quiet again while it answers.
`edgechat serve` as a child process, by default (its threads follow the free cores,
planning/follow.py) and with each ``--threads 1..N``, one after the other, each
answering ``--clients`` streamed clients that ask again as soon as a reply ends, while
the benchmark starts and stops busy-loop programs: ``--phases 0,1,2,0`` (busy cores in
each phase) of ``--phase-s`` seconds. Tokens are counted as they arrive, per phase;
the default's thread count is read from /health twice a second. Target: the default
within 10 % of the best fixed count in every phase, and over the whole run.

    python benchmarks/threads.py [--repeat 5] [--tokens 96] [--busy 0,1,2] [--json]
    python benchmarks/threads.py --server [--phases 0,1,2,0] [--phase-s 15]
        [--clients 1] [--repeat 1] [--json]
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from edgechat.llama.engine import Engine
from edgechat.planning.plan import RunPlan, Sampling
from edgechat.planning.threads import usable_cores

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _models import models  # noqa: E402

PROMPT = "Write a long, detailed story about a lighthouse keeper who befriends a whale."
SPIN = "while True:\n    pass\n"
TARGET = 0.9
JSON_TYPE = {"Content-Type": "application/json"}


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


# -- a server on a machine that gets busy and quiet again ----------------------------------


def busy_loops(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(n)]


def end(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
        p.wait()


def client(url: str, n_tokens: int, seed: int, stop: threading.Event, arrived: list) -> None:
    """Ask again as soon as each streamed reply ends; note when each piece arrives."""
    while not stop.is_set():
        body = {
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": n_tokens,
            "temperature": 0.7,
            "seed": seed,
            "stream": True,
        }
        seed += 1
        req = urllib.request.Request(
            url + "/chat/completions", json.dumps(body).encode(), JSON_TYPE
        )
        with urllib.request.urlopen(req, timeout=300) as response:
            for line in response:
                if stop.is_set():
                    return
                if line.startswith(b"data: {"):
                    (choice,) = json.loads(line[6:])["choices"]
                    if choice["delta"].get("content"):
                        arrived.append(time.monotonic())


def watch(base: str, stop: threading.Event, seen: list) -> None:
    """The server's thread count, twice a second."""
    while not stop.wait(0.5):
        try:
            with urllib.request.urlopen(base + "/health", timeout=5) as r:
                seen.append((time.monotonic(), json.loads(r.read())["threads"]))
        except OSError:
            pass


def serve_through(path: Path, threads: int, args) -> dict:
    """One server (``threads`` 0: the default, following the free cores) through every
    phase: tokens/s in each and over the whole run, and the thread counts /health said."""
    from support.serving import edgechat_serve

    fixed = ["--threads", str(threads)] if threads else []
    server = edgechat_serve(
        path, "--ctx", "1024", "--parallel", str(args.clients), "--quiet", *fixed
    )
    stop, arrived, seen, spans = threading.Event(), [], [], []
    base = server.url.removesuffix("/v1")
    helpers = [
        threading.Thread(target=client, args=(server.url, args.tokens, 1000 * i, stop, arrived))
        for i in range(args.clients)
    ]
    helpers.append(threading.Thread(target=watch, args=(base, stop, seen)))
    try:
        for t in helpers:
            t.start()
        time.sleep(2.0)  # every client has read its prompt and streams
        for busy in args.phases:
            procs, t0 = busy_loops(busy), time.monotonic()
            try:
                time.sleep(args.phase_s)
            finally:
                end(procs)
            spans.append((t0, time.monotonic()))
    finally:
        stop.set()
        server.stop()
        for t in helpers:
            t.join(10)
    rates, counts = [], []
    for t0, t1 in spans:
        rates.append(sum(t0 <= t < t1 for t in arrived) / (t1 - t0))
        counts.append(collections.Counter(n for t, n in seen if t0 <= t < t1))
    whole = sum(spans[0][0] <= t < spans[-1][1] for t in arrived)
    return {
        "tok_s": rates,
        "whole": whole / sum(t1 - t0 for t0, t1 in spans),
        "threads_seen": [dict(c) for c in counts],
    }


def server_run(path: Path, args) -> dict:
    """Every contender through the phases, the order rotating each round; medians."""
    names = ["follow"] + [f"{k} thr" for k in range(1, args.max_threads + 1)]
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(args.repeat):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            k = 0 if name == "follow" else int(name.split()[0])
            print(f"round {r + 1}: {name} ...", file=sys.stderr)
            runs[name].append(serve_through(path, k, args))
    out = {}
    for name, results in runs.items():
        per_phase = [
            statistics.median(r["tok_s"][i] for r in results) for i in range(len(args.phases))
        ]
        out[name] = {
            "tok_s": [round(v, 1) for v in per_phase],
            "whole": round(statistics.median(r["whole"] for r in results), 1),
            "threads_seen": results[-1]["threads_seen"],
        }
    fixed = [n for n in names if n != "follow"]
    best = [max(fixed, key=lambda n: out[n]["tok_s"][i]) for i in range(len(args.phases))]
    best_whole = max(fixed, key=lambda n: out[n]["whole"])
    ratios = [
        out["follow"]["tok_s"][i] / out[b]["tok_s"][i] if out[b]["tok_s"][i] else 0.0
        for i, b in enumerate(best)
    ]
    whole_ratio = (
        out["follow"]["whole"] / out[best_whole]["whole"] if out[best_whole]["whole"] else 0.0
    )
    return {
        "model": str(path),
        "usable_cores": usable_cores(),
        "phases_busy_cores": args.phases,
        "phase_s": args.phase_s,
        "clients": args.clients,
        "rounds": args.repeat,
        "servers": out,
        "best_fixed": best,
        "follow_vs_best": [round(x, 3) for x in ratios],
        "best_fixed_whole": best_whole,
        "follow_vs_best_whole": round(whole_ratio, 3),
        "within_target": min([*ratios, whole_ratio]) >= TARGET,
    }


def print_server(report: dict) -> None:
    phases = [("quiet" if b == 0 else f"{b} busy") for b in report["phases_busy_cores"]]
    head = ["server"] + phases + ["whole run"]
    print(
        f"{Path(report['model']).name}: edgechat serve, {report['clients']} client(s), "
        f"tok/s in each {report['phase_s']:.0f} s phase (median of {report['rounds']}); "
        "target: following >= 90 % of the best fixed count"
    )
    print("  ".join(f"{h:>12}" for h in head))
    for name, r in report["servers"].items():
        cells = [name]
        for i, v in enumerate(r["tok_s"]):
            seen = r["threads_seen"][i]
            mostly = f" ({max(seen, key=seen.get)})" if name == "follow" and seen else ""
            cells.append(f"{v:.1f}{mostly}")
        cells.append(f"{r['whole']:.1f}")
        print("  ".join(f"{c:>12}" for c in cells))
    cells = ["best fixed", *report["best_fixed"], report["best_fixed_whole"]]
    print("  ".join(f"{c:>12}" for c in cells))
    ratios = [*report["follow_vs_best"], report["follow_vs_best_whole"]]
    cells = ["follow/best"] + [f"{x:.0%} {'ok' if x >= TARGET else 'MISSED'}" for x in ratios]
    print("  ".join(f"{c:>12}" for c in cells))
    print("(follow: the thread count /health said most often in each phase, in brackets)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, help="interleaved rounds, median (5; --server: 1)")
    ap.add_argument("--tokens", type=int, default=96, help="tokens per reply")
    ap.add_argument("--busy", default="0,1,2", help="competing busy cores per scenario")
    ap.add_argument(
        "--max-threads", type=int, default=0, help="fixed counts 1..N (default: usable cores)"
    )
    ap.add_argument("--model", type=Path, help="a GGUF (default: the starter, SmolLM2)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument(
        "--server", action="store_true", help="a server whose machine gets busy and quiet"
    )
    ap.add_argument("--phases", default="0,1,2,0", help="--server: busy cores in each phase")
    ap.add_argument("--phase-s", type=float, default=15.0, help="--server: seconds a phase")
    ap.add_argument("--clients", type=int, default=1, help="--server: clients at once")
    args = ap.parse_args()
    path = args.model or next(iter(models().values()))
    args.max_threads = args.max_threads or usable_cores()
    args.repeat = args.repeat or (1 if args.server else 5)
    if args.server:
        args.phases = [int(b) for b in args.phases.split(",")]
        report = server_run(path, args)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print_server(report)
        return 0
    counts = list(range(1, args.max_threads + 1))
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
