"""The memory estimate against measured peak RSS, and the speed estimate against real speed.

For each PyPI-shipped model at each context: ``edgechat estimate``'s figure (the
same code path: header -> Shape -> plan for this device), then a real load in a
fresh process that fills 90 % of the context, generates 32 tokens and reads the
process's peak resident set (VmHWM). Error = estimate - measured. The target is
max(5 %, 40 MiB). The tokens/s column compares the roofline with the measured rate.

    python benchmarks/memory_estimate.py [--ctx 512 2048 8192] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgechat.facts.device import detect
from edgechat.facts.gguf import inspect_file
from edgechat.lab.measure import measure
from edgechat.planning.fit import plan_for
from edgechat.planning.memory import Shape
from edgechat.planning.plan import RunPlan
from edgechat.planning.speed import cpu_bandwidth, tokens_per_second

sys.path.insert(0, str(Path(__file__).parent))
from _models import models  # noqa: E402

MiB = 1024**2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ctx", type=int, nargs="+", default=[512, 2048, 8192])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    device = detect()
    gb_s = cpu_bandwidth(device)
    rows = []
    for name, path in models().items():
        shape = Shape.from_facts(inspect_file(path))
        for n_ctx in args.ctx:
            est, _fit = plan_for(RunPlan(path, n_ctx=n_ctx), shape, device, auto_gpu=True)
            speed = tokens_per_second(shape, est, device, gb_s, context_fill=0.9)
            m = measure(est.plan)
            measured = m["rss_peak"]
            error = est.ram_peak - measured
            target = max(0.05 * measured, 40 * MiB)
            rows.append(
                {
                    "model": name,
                    "n_ctx": est.n_ctx,
                    "estimate_mib": round(est.ram_peak / MiB, 1),
                    "measured_mib": round(measured / MiB, 1),
                    "error_mib": round(error / MiB, 1),
                    "error_pct": round(100 * error / measured, 1),
                    "within_target": abs(error) <= target,
                    "kv_estimate_mib": round(est.parts["KV cache"][0] / MiB, 2),
                    "kv_llama_mib": m["llama_buffers_mib"].get("CPU KV"),
                    "tps_estimate": round(speed.tokens_per_s, 1),
                    "tps_measured": round(m["gen_tokens_per_s"], 1),
                }
            )
            r = rows[-1]
            if not args.json:
                print(
                    f"{name:<20} ctx {r['n_ctx']:>5}  estimate {r['estimate_mib']:>7.1f} MiB  "
                    f"measured {r['measured_mib']:>7.1f} MiB  error {r['error_mib']:>+6.1f} MiB "
                    f"({r['error_pct']:>+5.1f} %) {'ok' if r['within_target'] else 'MISS'}  "
                    f"KV {r['kv_estimate_mib']}/{r['kv_llama_mib']} MiB  "
                    f"tok/s {r['tps_estimate']} est / {r['tps_measured']} measured",
                    flush=True,
                )
    worst = max(abs(r["error_mib"]) for r in rows) if rows else 0.0
    summary = {
        "cpu": device.cpu_model,
        "cpu_bandwidth_gb_s": round(gb_s, 1),
        "rows": rows,
        "worst_error_mib": worst,
        "all_within_target": all(r["within_target"] for r in rows),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"worst error {worst:.1f} MiB; all within max(5 %, 40 MiB): "
            f"{summary['all_within_target']}; CPU read bandwidth {gb_s:.1f} GB/s"
        )
    return 0 if summary["all_within_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
