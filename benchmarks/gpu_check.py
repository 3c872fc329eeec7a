"""A GPU check anyone can run: one run, one table per question, on any NVIDIA machine.

1. the device line (GPU, VRAM, driver, llama.cpp build);
2. the numpy-first crash probe: a process that imports numpy and then loads a model,
   and the same through edgechat's own entry path (llama/backend.py);
3. memory: the estimate against a real load-fill-generate (``lab.measure``, a fresh
   process), peak VRAM from nvidia-smi (whole GPU less its idle baseline, as recorded
   in tests/data/gpu/) and peak RSS, for a few plans (all layers, half, 0);
4. generation tok/s with every layer on the GPU: edgechat (backend sampling, as it
   chooses there), edgechat with CPU sampling, the bare C-API loop of
   benchmarks/generation.py, and llama-bench (``--llama-bench PATH`` or $LLAMA_BENCH);
5. greedy equality: backend sampling's tokens against CPU sampling's.

Without a GPU it says so, runs 3 (CPU plan), 4 (CPU) and 5 on the CPU, and exits 0.

    python benchmarks/gpu_check.py [MODEL.gguf ...] [--ctx 4096] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from edgechat.llama import backend

backend.load()  # llama.cpp before numpy (gguf), as every entry point does

from edgechat.facts.device import detect  # noqa: E402
from edgechat.facts.gguf import inspect_file  # noqa: E402
from edgechat.lab.measure import measure  # noqa: E402
from edgechat.llama.engine import Engine  # noqa: E402
from edgechat.planning.fit import gpu_backend  # noqa: E402
from edgechat.planning.memory import Shape, estimate  # noqa: E402
from edgechat.planning.plan import RunPlan, Sampling, physical_cores  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _models import models  # noqa: E402
from generation import PROMPT, CApiLoop, bench_capi, bench_edgechat  # noqa: E402

MiB = 2**20
SMI = shutil.which("nvidia-smi")


def gpu_used_mib() -> int | None:
    if not SMI:
        return None
    out = subprocess.run(
        [SMI, "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
    ).stdout
    return int(out.split()[0]) if out.strip() else None


def with_vram_peak(fn):
    """Run ``fn`` while polling the whole GPU's used memory: (its result, peak MiB above
    the baseline), or (result, None) without nvidia-smi."""
    base = gpu_used_mib()
    if base is None:
        return fn(), None
    peak, stop = [base], threading.Event()

    def poll():
        while not stop.is_set():
            peak[0] = max(peak[0], gpu_used_mib() or 0)
            time.sleep(0.03)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    try:
        result = fn()
    finally:
        stop.set()
        t.join()
    return result, peak[0] - base


def crash_probe(model: Path, ngl: int) -> dict:
    """numpy first then a load, in fresh processes: the library order and edgechat's."""
    load = f"Engine(RunPlan(Path({str(model)!r}), n_ctx=512, n_gpu_layers={ngl})).close()"
    imports = "from pathlib import Path; from edgechat.planning.plan import RunPlan; "
    scripts = {
        "numpy, then Engine": f"import numpy; {imports}from edgechat.llama.engine import Engine; "
        + load,
        "backend.load(), numpy, Engine": "from edgechat.llama import backend; backend.load(); "
        f"import numpy; {imports}from edgechat.llama.engine import Engine; " + load,
    }
    out = {}
    for name, code in scripts.items():
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        out[name] = r.returncode
    if out["numpy, then Engine"] != 0:
        out["bindings into libggml-cuda"] = cuda_bindings(scripts["numpy, then Engine"])
    return out


def cuda_bindings(code: str, limit: int = 12) -> list[str]:
    """After a crash: which C++ runtime symbols (std::ostream, locale, ios_base) the
    dynamic linker bound into libggml-cuda.so, the suspected cause (llama/backend.py)."""
    import glob
    import tempfile

    prefix = Path(tempfile.mkdtemp()) / "ld"
    env = {**os.environ, "LD_DEBUG": "bindings", "LD_DEBUG_OUTPUT": str(prefix)}
    subprocess.run([sys.executable, "-c", code], capture_output=True, env=env)
    found: list[str] = []
    for log in glob.glob(f"{prefix}.*"):
        for line in Path(log).read_text(errors="replace").splitlines():
            if "libggml-cuda" in line.split(" to ", 1)[-1].split(":")[0] and any(
                k in line for k in ("_ZNSo", "_ZSt16__ostream_insert", "_ZNSt6locale", "ios_base")
            ):
                found.append(line.split(":", 1)[-1].strip())
    return found[:limit]


def memory_rows(label: str, path: Path, shape: Shape, device, gpu: str | None, ctx: int):
    plans = [shape.n_layers + 1, (shape.n_layers + 1) // 2, 0] if gpu else [0]
    rows = []
    for ngl in plans:
        plan = RunPlan(path, n_ctx=ctx, n_gpu_layers=ngl)
        est = estimate(plan, shape, device.simd, gpu)
        measured, vram = with_vram_peak(lambda p=plan: measure(p, fill=0.9, gen_tokens=32))
        rows.append(
            {
                "model": label,
                "n_ctx": est.n_ctx,
                "gpu_layers": ngl,
                "vram_est_mib": round(est.vram / MiB),
                "vram_measured_mib": vram,
                "vram_error_pct": round(100 * (est.vram / MiB - vram) / vram, 1) if vram else None,
                "ram_peak_est_mib": round(est.ram_peak / MiB),
                "ram_needed_est_mib": round(est.ram_needed / MiB),
                "rss_peak_mib": round(measured["rss_peak"] / MiB),
                "gen_tps": round(measured["gen_tokens_per_s"], 1),
                "llama_buffers_mib": measured["llama_buffers_mib"],
            }
        )
    return rows


def speed_rows(label: str, path: Path, ngl: int, args) -> list[dict]:
    plan = RunPlan(path, n_ctx=args.ctx, n_threads=args.threads, n_gpu_layers=ngl)
    engine = Engine(plan)
    messages = [{"role": "user", "content": PROMPT}]
    tokens = engine.prompt_tokens(messages)
    loop = CApiLoop(path, args.ctx, args.threads, n_gpu_layers=ngl)

    def edgechat(backend_sampling):
        engine.backend_sampling = backend_sampling
        return bench_edgechat(engine, messages, args.tokens)[0]

    methods = {
        "edgechat (auto sampling)": lambda: edgechat(None),
        "edgechat (CPU sampling)": lambda: edgechat(False),
        "bare C-API loop": lambda: bench_capi(loop, tokens, args.tokens)[0],
    }
    if args.llama_bench:
        cmd = [args.llama_bench, "-m", str(path), "-p", "0", "-n", str(args.tokens)]
        cmd += ["-ngl", str(ngl), "-t", str(args.threads), "-r", "1", "-o", "json"]
        methods["llama-bench tg (no sampling)"] = lambda: float(
            json.loads(subprocess.run(cmd, capture_output=True, text=True).stdout)[0]["avg_ts"]
        )
    for fn in methods.values():
        fn()  # warm-up
    runs: dict[str, list[float]] = {k: [] for k in methods}
    names = list(methods)
    for rep in range(args.repeat):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            runs[name].append(methods[name]())
    engine.backend_sampling = None
    engine.chat(messages, Sampling(max_tokens=2)).collect()
    auto_backend = engine.last_backend_sampling
    ref = statistics.median(runs["bare C-API loop"])
    rows = [
        {
            "model": label,
            "method": name,
            "tok_s": round(statistics.median(v), 1),
            "vs_loop": round(statistics.median(v) / ref, 3) if ref else None,
            "backend_sampling": auto_backend if name.endswith("(auto sampling)") else None,
        }
        for name, v in runs.items()
    ]
    engine.close()
    loop.close()
    return rows


def greedy_equal(path: Path, ngl: int, n: int = 64) -> dict:
    engine = Engine(RunPlan(path, n_ctx=1024, n_gpu_layers=ngl))
    ask = [{"role": "user", "content": PROMPT}]
    out = {}
    for name, flag in (("cpu", False), ("backend", True)):
        engine.backend_sampling = flag
        reply = engine.chat(ask, Sampling(temperature=0.0, max_tokens=n))
        out[name] = engine.tokenize(reply.collect(), add_special=False)
        out[f"{name}_used_backend"] = engine.last_backend_sampling
    engine.close()
    pairs = enumerate(zip(out["cpu"], out["backend"], strict=False))
    first = next((i for i, (a, b) in pairs if a != b), None)
    return {
        "equal": out["cpu"] == out["backend"] and out["backend_used_backend"],
        "tokens": len(out["cpu"]),
        "first_difference": first,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", type=Path, help="GGUF files (default: the PyPI ones)")
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument("--llama-bench", default=os.environ.get("LLAMA_BENCH"))
    ap.add_argument("--json", action="store_true", help="print JSON only")
    args = ap.parse_args()

    device = detect()
    gpu = gpu_backend(device)
    found = {p.name: p for p in args.models} if args.models else models()
    report: dict = {"device": device_line(device, gpu), "gpu": gpu}
    say = (lambda *a: None) if args.json else print
    say(report["device"])
    if gpu != "cuda":
        say("no NVIDIA GPU usable by this llama.cpp build: running the CPU parts only")
    ngl = 999 if gpu else 0
    first = next(iter(found.values()))
    report["crash_probe"] = crash_probe(first, ngl)
    say(f"numpy-first probe (exit codes, 0 = loaded): {report['crash_probe']}")
    report["memory"], report["speed"], report["greedy"] = [], [], {}
    for label, path in found.items():
        shape = Shape.from_facts(inspect_file(path))
        report["memory"] += memory_rows(label, path, shape, device, gpu, args.ctx)
        report["speed"] += speed_rows(label, path, ngl, args)
        report["greedy"][label] = greedy_equal(path, ngl)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"\nmemory at {args.ctx} tokens (VRAM: whole GPU less its idle baseline)")
    print(
        f"{'model':<24} {'ngl':>4} {'VRAM est':>9} {'measured':>9} {'err':>7} "
        f"{'RAM peak est':>12} {'needed':>7} {'RSS peak':>9} {'tok/s':>7}"
    )
    for r in report["memory"]:
        err = f"{r['vram_error_pct']:+.1f}%" if r["vram_error_pct"] is not None else "-"
        print(
            f"{r['model'][:24]:<24} {r['gpu_layers']:>4} {r['vram_est_mib']:>9} "
            f"{r['vram_measured_mib'] if r['vram_measured_mib'] is not None else '-':>9} "
            f"{err:>7} {r['ram_peak_est_mib']:>12} {r['ram_needed_est_mib']:>7} "
            f"{r['rss_peak_mib']:>9} {r['gen_tps']:>7}"
        )
    print(f"\ngeneration tok/s, {args.tokens} tokens, median of {args.repeat}, interleaved")
    for r in report["speed"]:
        note = " (backend sampling)" if r["backend_sampling"] else ""
        print(
            f"{r['model'][:24]:<24} {r['method']:<30} {r['tok_s']:>8.1f} "
            f"{r['vs_loop']:>7.3f}x loop{note}"
        )
    print("\ngreedy tokens, backend sampling vs CPU sampling")
    for label, g in report["greedy"].items():
        print(f"{label[:24]:<24} equal={g['equal']} over {g['tokens']} tokens")
    print(json.dumps(report))
    return 0


def device_line(device, gpu: str | None) -> str:
    g = device.gpus[0] if device.gpus else None
    card = (
        f"{g.name}, {round((g.vram_total or 0) / 2**30, 1)} GiB, driver {g.driver or '?'}"
        if g
        else "no GPU"
    )
    build = ",".join(device.llama_backends) or "?"
    return f"device: {card}; llama.cpp build: {build}; plans for: {gpu or 'CPU only'}"


if __name__ == "__main__":
    raise SystemExit(main())
