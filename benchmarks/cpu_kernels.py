"""llama.cpp's CPU kernels on this machine: edgechat's choice (``cpu_kernels = auto``)
against the other kernel sets that passed the check, and llama-bench built without AMX
(and with it, when given), on the same models and thread count, in one run.

Each edgechat row runs in a fresh process (``lab.measure``, as ``edgechat bench``), so
a kernel set that crashes takes only its own row; llama-bench reports its own pp, and its
tg at the depth the edgechat rows write at. Rows alternate per round, so drift hits every
method alike; medians over the rounds.

    python benchmarks/cpu_kernels.py [--llama-bench PATH] [--llama-bench-amx PATH]
        [--threads N] [--prompt 256] [--tokens 64] [--rounds 3] [--json]

``--llama-bench`` defaults to .cache/llama-tools/llama-bench, which
``../shared/tools/build-llama-tools.sh`` builds without AMX on an AMX CPU;
``LLAMA_TOOLS_AMX=1`` builds the native one for ``--llama-bench-amx``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from edgechat.facts import kernels
from edgechat.lab.measure import measure
from edgechat.llama import backend, kernelcheck
from edgechat.planning.plan import RunPlan, physical_cores

sys.path.insert(0, str(Path(__file__).parent))
from _models import models  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def llama_bench(binary: Path, model: Path, threads: int, prompt: int, tokens: int) -> dict:
    """llama-bench's own pp and tg rates, tg at the depth ``lab.measure`` writes at (after
    its prompt, about ``prompt`` + 48 tokens: at depth 0 tg is much faster, and not what
    the edgechat rows measure); ``{"error": ...}`` when it fails or crashes."""
    rates = {}
    for key, p, n, depth in (("prompt_tps", prompt, 0, 0), ("gen_tps", 0, tokens, prompt + 48)):
        cmd = [str(binary), "-m", str(model), "-p", str(p), "-n", str(n), "-d", str(depth)]
        cmd += ["-t", str(threads), "-r", "1", "-o", "json"]
        env = {"LD_LIBRARY_PATH": str(binary.parent)}
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        except subprocess.TimeoutExpired:
            return {"error": "timed out"}
        if out.returncode < 0:
            return {"error": f"crashed (signal {-out.returncode})"}
        if out.returncode != 0:
            return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1][:80]}
        rates[key] = json.loads(out.stdout)[0]["avg_ts"]
    return rates


def edgechat_row(plan: RunPlan, setting: str, prompt: int, tokens: int) -> dict:
    fill = (prompt + tokens + 48) / plan.n_ctx  # measure() fills this much of the context
    try:
        r = measure(replace(plan, cpu_kernels=setting), fill=fill, gen_tokens=tokens)
    except Exception as exc:  # noqa: BLE001 - a crashed set is a row, not the end of the run
        return {"error": str(exc)[:80]}
    return {"prompt_tps": r["prompt_tokens_per_s"], "gen_tps": r["gen_tokens_per_s"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llama-bench", type=Path, default=REPO / ".cache/llama-tools/llama-bench")
    ap.add_argument("--llama-bench-amx", type=Path)
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    chosen = kernelcheck.kernels_for(backend.load(), "auto")
    verdict = kernels.remembered()
    methods: dict[str, object] = {f"edgechat auto ({chosen.title})": "auto"}
    for setting in ("amx", "repack", "plain"):
        names = kernels.choose(setting, verdict.available, verdict).names if verdict else ()
        ok = verdict and all((r := verdict.result((n,))) and r.ok for n in names)
        if names != chosen.names and ok:
            methods[f"edgechat {setting} ({kernels.title(names)})"] = setting
    if args.llama_bench.exists():
        methods["llama-bench (no AMX)"] = args.llama_bench
    if args.llama_bench_amx and args.llama_bench_amx.exists():
        methods["llama-bench (AMX)"] = args.llama_bench_amx
    print(f"CPU kernels: auto uses {chosen.title} ({chosen.why}); {args.threads} threads")

    table = []
    for label, path in models().items():
        plan = RunPlan(path, n_ctx=1024, n_threads=args.threads)
        runs: dict[str, list[dict]] = {m: [] for m in methods}
        for _ in range(args.rounds):
            for name, how in methods.items():
                if isinstance(how, Path):
                    row = llama_bench(how, path, args.threads, args.prompt, args.tokens)
                else:
                    row = edgechat_row(plan, how, args.prompt, args.tokens)
                runs[name].append(row)
        ref = "llama-bench (no AMX)"
        for name, rows in runs.items():
            good = [r for r in rows if "error" not in r]
            entry = {"model": label, "method": name}
            if not good:
                entry["error"] = rows[0]["error"]
            else:
                for k in ("prompt_tps", "gen_tps"):
                    entry[k] = statistics.median(r[k] for r in good)
            table.append(entry)
        base = next((e for e in table if e["model"] == label and e["method"] == ref), None)
        for e in table:
            if e["model"] == label and base and "error" not in base and "error" not in e:
                e["prompt_x"] = e["prompt_tps"] / base["prompt_tps"]
                e["gen_x"] = e["gen_tps"] / base["gen_tps"]
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    print(f"{'model':<20} {'method':<42} {'prompt t/s':>10} {'gen t/s':>8} {'pp x':>5} {'tg x':>5}")
    for e in table:
        if "error" in e:
            print(f"{e['model']:<20} {e['method']:<42} {e['error']}")
            continue
        px = f"{e['prompt_x']:.2f}" if "prompt_x" in e else "-"
        gx = f"{e['gen_x']:.2f}" if "gen_x" in e else "-"
        print(
            f"{e['model']:<20} {e['method']:<42} {e['prompt_tps']:>10.1f} {e['gen_tps']:>8.1f}"
            f" {px:>5} {gx:>5}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
