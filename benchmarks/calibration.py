"""Calibration against llama.cpp's own tools, on both PyPI models (their F16 made by the
lab's dequantize), in one run:

1. edgechat's importance matrix against llama-imatrix's (same model, text, context,
   chunks, flash attention off as calibrate runs it): the largest relative difference
   per tensor and the counts; beside it the difference from llama-imatrix's defaults,
   and llama-imatrix's own with its batching changed; and whether
   edgechat writes llama-imatrix's file byte for byte (load it, save it, compare) and
   reads its legacy .dat the same;
2. `quantize --imatrix` against `llama-quantize --imatrix` with the same (edgechat's)
   matrix and recipe (uniform = --pure; mixed = --token-embedding-type q8_0
   --output-tensor-type q6_k or q8_0): are the tensors byte-identical;
3. KLD, PPL ratio and top-1 against the F16 on held-out text (other licences than the
   calibration text) with and without the matrix, and llama.cpp's own calibrated quant
   (llama-quantize's default mixture with llama-imatrix's matrix) beside them;
4. the time of `edgechat calibrate` against llama-imatrix on the same plan (context,
   chunks, threads, one sequence per batch, flash attention off as calibrate runs it,
   no perplexity), both as commands,
   interleaved, median of --repeat. This part is the one to take on a quiet machine.

llama.cpp's tools come from the sdist's vendored llama.cpp (not in CI):
    /work/shared/tools/build-llama-tools.sh DIR     (pip download --no-binary the sdist of
    llama-cpp-python 0.3.36, cmake -DGGML_NATIVE=ON, build llama-imatrix llama-quantize)

    python benchmarks/calibration.py --llama-imatrix DIR/llama-imatrix \\
        --llama-quantize DIR/llama-quantize [--chunks 10] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgechat.llama import backend

backend.load()  # llama.cpp before numpy: see edgechat/llama/backend.py

from edgechat.lab import imatrix  # noqa: E402
from edgechat.lab.calibrate import calibrate  # noqa: E402
from edgechat.lab.quality import compare  # noqa: E402
from edgechat.lab.quantize import dequantize, quantize  # noqa: E402
from edgechat.llama.engine import Engine  # noqa: E402
from edgechat.planning.plan import RunPlan, physical_cores  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _models import models  # noqa: E402

LICENCES = Path("/usr/share/common-licenses")
CALIBRATION = ("GPL-3", "GPL-2")
HELD_OUT = ("GFDL-1.3", "Apache-2.0", "MPL-2.0")
TYPES = ("Q4_K_M", "Q3_K_M", "Q2_K", "IQ4_XS")


def tool(binary: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LD_LIBRARY_PATH": str(Path(binary).resolve().parent)}
    out = subprocess.run([binary, *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{Path(binary).name} failed:\n{out.stderr[-2000:]}")
    return out


def max_rel_diff(ours, theirs) -> float:
    import numpy as np

    a, b = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    scale = np.maximum(np.abs(b), 1e-30)
    return float((np.abs(a - b) / scale).max())


def matrices(ours: imatrix.ImportanceMatrix, theirs: imatrix.ImportanceMatrix) -> dict:
    """Per tensor: the largest relative difference of the sums; counts equal or not."""
    per = {
        n: max_rel_diff(ours.in_sum2[n], theirs.in_sum2[n])
        for n in theirs.names
        if n in ours.in_sum2
    }
    worst = max(per, key=per.get)
    return {
        "tensors": len(ours),
        "tensors_llama": len(theirs),
        "same_names": ours.names == theirs.names,
        "counts_equal": all(ours.counts[n].tolist() == theirs.counts[n].tolist() for n in per),
        "chunk_count": [ours.chunk_count, theirs.chunk_count],
        "max_rel_diff": per[worst],
        "worst_tensor": worst,
        "median_rel_diff": statistics.median(per.values()),
        "per_tensor": per,
    }


def tensors_identical(a: Path, b: Path) -> tuple[int, int, list[str]]:
    """How many tensors of ``a`` are byte-identical (same type too) in ``b``."""
    from gguf import GGUFReader

    theirs = {t.name: t for t in GGUFReader(b).tensors}
    same, differ = 0, []
    tensors = GGUFReader(a).tensors
    for t in tensors:
        o = theirs.get(t.name)
        if (
            o is not None
            and o.tensor_type == t.tensor_type
            and t.data.tobytes() == o.data.tobytes()
        ):
            same += 1
        else:
            differ.append(t.name)
    return same, len(tensors), differ


def mixed_flags(f16: Path) -> list[str]:
    """llama-quantize's flags for edgechat's mixed recipe (see lab/quantize.py)."""
    from edgechat.facts.gguf import inspect_file

    head = "q6_k" if inspect_file(f16).n_embd % 256 == 0 else "q8_0"
    return ["--token-embedding-type", "q8_0", "--output-tensor-type", head]


def timed(cmd: list[str], env: dict | None = None) -> float:
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if out.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed:\n{out.stderr[-2000:]}")
    return time.perf_counter() - t


@dataclass
class Run:
    """One model's run: where things are, and the options."""

    args: argparse.Namespace
    name: str
    f16: Path
    work: Path
    text: Path
    say: Callable[..., None]

    @property
    def stem(self) -> str:
        return self.f16.stem

    def llama_imatrix(self, label: str, *extra: str) -> Path:
        a = self.args
        out = self.work / f"{self.stem}.llama-{label}.imatrix.gguf"
        tool(a.llama_imatrix, "-m", str(self.f16), "-f", str(self.text), "-o", str(out),
             "-c", str(a.ctx), "--chunks", str(a.chunks), "-t", str(a.threads), "-ngl", "0",
             *extra)  # fmt: skip
        return out


def section_matrices(run: Run, ours: imatrix.ImportanceMatrix) -> tuple[dict, Path]:
    """1. llama-imatrix as a user runs it batches 4 chunks of 512 at once; with flash
    attention (its default here) its figures then move by ~1 % with the batching, so the
    same plan as calibrate's is flash attention off."""
    same_plan = imatrix.load(run.llama_imatrix("fa-off", "-fa", "off"))
    theirs_path = run.llama_imatrix("default")
    theirs = imatrix.load(theirs_path)
    one_seq = imatrix.load(run.llama_imatrix("b512", "-b", str(run.args.ctx)))
    cmp = matrices(ours, same_plan)
    cmp["vs_llama_default_max_rel_diff"] = matrices(ours, theirs)["max_rel_diff"]
    cmp["llama_default_vs_llama_one_chunk_per_batch"] = matrices(one_seq, theirs)["max_rel_diff"]
    resaved = imatrix.save(theirs, run.work / f"{run.stem}.resaved.imatrix.gguf")
    cmp["file_bytes_identical_after_load_save"] = resaved.read_bytes() == theirs_path.read_bytes()
    dat = run.work / f"{run.stem}.llama.imatrix.dat"
    tool(run.args.llama_imatrix, "--in-file", str(theirs_path), "-o", str(dat),
         "--output-format", "dat", "-c", str(run.args.ctx))  # fmt: skip
    legacy, means = imatrix.load(dat).mean_squares(), theirs.mean_squares()
    cmp["legacy_dat_max_rel_diff"] = max(max_rel_diff(legacy[n], means[n]) for n in means)
    run.say(
        f"matrix vs llama-imatrix -fa off (the same plan): {cmp['tensors']}/"
        f"{cmp['tensors_llama']} tensors, same names {cmp['same_names']}, counts equal "
        f"{cmp['counts_equal']}, chunks {cmp['chunk_count']}; largest relative difference "
        f"{cmp['max_rel_diff']:.2e} ({cmp['worst_tensor']}), median {cmp['median_rel_diff']:.1e}"
    )
    run.say(
        f"  vs llama-imatrix's defaults (flash attention, 4 chunks a batch): "
        f"{cmp['vs_llama_default_max_rel_diff']:.2e}; llama-imatrix against itself with one "
        f"chunk a batch: {cmp['llama_default_vs_llama_one_chunk_per_batch']:.2e}"
    )
    run.say(
        f"  llama-imatrix's file re-saved by edgechat is byte-identical: "
        f"{cmp['file_bytes_identical_after_load_save']}; its legacy .dat read back: max rel "
        f"diff {cmp['legacy_dat_max_rel_diff']:.1e}"
    )
    return cmp, theirs_path


def section_identity(run: Run, ours, ours_path: Path, types, files: dict) -> list[dict]:
    """2. byte identity with the same (edgechat's) matrix and recipe."""
    a = run.args
    run.say("quantized tensors, edgechat vs llama-quantize (same matrix, same recipe):")
    rows = []
    for qtype in types:
        for recipe, flags in (("uniform", ["--pure"]), ("mixed", mixed_flags(run.f16))):
            mine = run.work / f"{run.stem}-{qtype}-{recipe}-im.gguf"
            quantize(run.f16, mine, qtype, recipe, threads=a.threads, imatrix=ours, force=True)
            llama = run.work / f"{run.stem}-{qtype}-{recipe}-im.llama.gguf"
            tool(a.llama_quantize, *flags, "--imatrix", str(ours_path), str(run.f16),
                 str(llama), qtype, str(a.threads))  # fmt: skip
            same, total, differ = tensors_identical(mine, llama)
            files[(qtype, f"edgechat {recipe}+imatrix")] = mine
            rows.append({"type": qtype, "recipe": recipe, "identical": same, "tensors": total,
                         "differ": differ[:5]})  # fmt: skip
            tail = f" (differ: {', '.join(differ[:3])})" if differ else ""
            run.say(f"  {qtype:<8} {recipe:<8} {same}/{total} identical{tail}")
    return rows


def section_quality(run: Run, ours, theirs_path, types, files: dict, held_out: str) -> list:
    """3. with and without the matrix, and llama.cpp's own calibrated quant."""
    a = run.args
    for qtype in types:
        plain = run.work / f"{run.stem}-{qtype}-mixed.gguf"
        quantize(run.f16, plain, qtype, "mixed", threads=a.threads, force=True)
        files[(qtype, "edgechat mixed")] = plain
        if (qtype, "edgechat mixed+imatrix") not in files:
            weighed = run.work / f"{run.stem}-{qtype}-mixed-im.gguf"
            quantize(run.f16, weighed, qtype, "mixed", threads=a.threads, imatrix=ours, force=True)
            files[(qtype, "edgechat mixed+imatrix")] = weighed
        if a.llama_quantize and theirs_path:
            own = run.work / f"{run.stem}-{qtype}-llama-own.gguf"
            tool(a.llama_quantize, "--imatrix", str(theirs_path), str(run.f16), str(own), qtype,
                 str(a.threads))  # fmt: skip
            files[(qtype, "llama.cpp +imatrix")] = own
    rows = []
    run.say(f"quality on {len(held_out)} held-out characters against the F16:")
    head = ("type", "quant", "MiB", "PPL ratio", "mean KLD", "top-1 %")
    run.say("  {:<8} {:<26} {:>6} {:>10} {:>9} {:>8}".format(*head))
    labels = ("edgechat mixed", "edgechat mixed+imatrix", "llama.cpp +imatrix",
              "edgechat uniform+imatrix")  # fmt: skip
    with Engine(RunPlan(run.f16, n_ctx=a.ctx, n_threads=a.threads)) as ref:
        for qtype in types:
            for label in labels:
                path = files.get((qtype, label))
                if path is None:
                    continue
                with Engine(RunPlan(path, n_ctx=a.ctx, n_threads=a.threads)) as model:
                    q = compare(model, ref, held_out, a.ctx)
                e = {"type": qtype, "quant": label, "mib": round(path.stat().st_size / 2**20, 1),
                     "ppl_ratio": round(q.ppl / q.ppl_ref, 4), "kl_mean": round(q.kl_mean, 5),
                     "top1_pct": round(100 * q.top1_agreement, 2), "chunks": q.chunks}  # fmt: skip
                rows.append(e)
                run.say(f"  {qtype:<8} {label:<26} {e['mib']:>6} {e['ppl_ratio']:>10.4f} "
                        f"{e['kl_mean']:>9.5f} {e['top1_pct']:>8.2f}")  # fmt: skip
    return rows


def section_timing(run: Run) -> dict:
    """4. both as commands, interleaved; NOISY unless the machine is quiet."""
    a = run.args
    out = run.work / "timing.imatrix.gguf"
    ours_cmd = [sys.executable, "-m", "edgechat", "calibrate", str(run.f16), "--text",
                str(run.text), "--out", str(out), "--force", "--ctx", str(a.ctx), "--chunks",
                str(a.chunks), "--threads", str(a.threads), "--gpu-layers", "0"]  # fmt: skip
    theirs_cmd = [a.llama_imatrix, "-m", str(run.f16), "-f", str(run.text), "-o", str(out),
                  "-c", str(a.ctx), "-b", str(a.ctx), "--chunks", str(a.chunks), "-t",
                  str(a.threads), "-ngl", "0", "--no-ppl", "-fa", "off"]  # fmt: skip
    env = {"LD_LIBRARY_PATH": str(Path(a.llama_imatrix).resolve().parent)}
    mine, theirs = [], []
    for _ in range(a.repeat):
        mine.append(timed(ours_cmd))
        theirs.append(timed(theirs_cmd, env))
    tm, tt = statistics.median(mine), statistics.median(theirs)
    run.say(
        f"time (median of {a.repeat}, interleaved, commands incl. start-up; NOISY unless the "
        f"machine is quiet): edgechat calibrate {tm:.2f} s, llama-imatrix {tt:.2f} s: "
        f"{100 * tt / tm:.0f} % of llama-imatrix's speed"
    )
    return {
        "edgechat_s": mine,
        "llama_imatrix_s": theirs,
        "speed_vs_llama_pct": round(100 * tt / tm, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-imatrix", metavar="PATH")
    ap.add_argument("--llama-quantize", metavar="PATH")
    ap.add_argument("--ctx", type=int, default=512, help="chunk size (512)")
    ap.add_argument("--chunks", type=int, default=8, help="calibration chunks (8)")
    ap.add_argument("--eval-chars", type=int, default=12_000, help="held-out text to score")
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--repeat", type=int, default=3, help="timing runs of each tool (3)")
    ap.add_argument("--only", help="one model (a substring of its name)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    types = [t.strip().upper() for t in args.types.split(",") if t.strip()]
    work = Path(tempfile.gettempdir()) / "edgechat-bench" / "calibration"
    work.mkdir(parents=True, exist_ok=True)
    text = work / "calibration.txt"
    text.write_text("\n\n".join((LICENCES / n).read_text() for n in CALIBRATION))
    held_out = "\n\n".join((LICENCES / n).read_text() for n in HELD_OUT)[: args.eval_chars]
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, flush=True))
    report = []
    for name, shipped in models().items():
        if args.only and args.only.lower() not in name.lower():
            continue
        f16 = work / f"{shipped.stem}-F16.gguf"
        if not f16.exists():
            dequantize(shipped, f16)
        run = Run(args, name, f16, work, text, say)
        row: dict = {"model": name, "f16": str(f16), "ctx": args.ctx, "chunks": args.chunks}
        say(f"\n== {name}: F16 by dequantize; calibration {'+'.join(CALIBRATION)}, "
            f"{args.chunks} chunks of {args.ctx}; held out {'+'.join(HELD_OUT)}")  # fmt: skip
        t = time.perf_counter()
        plan = RunPlan(f16, n_ctx=args.ctx, n_threads=args.threads)
        ours = calibrate(plan, [text], ctx=args.ctx, chunks=args.chunks)
        row["calibrate_in_process_s"] = round(time.perf_counter() - t, 2)
        ours_path = imatrix.save(ours, work / f"{run.stem}.edgechat.imatrix.gguf")
        theirs_path = None
        if args.llama_imatrix:
            row["matrix"], theirs_path = section_matrices(run, ours)
        files: dict[tuple[str, str], Path] = {}
        if args.llama_quantize:
            row["identity"] = section_identity(run, ours, ours_path, types, files)
        row["quality"] = section_quality(run, ours, theirs_path, types, files, held_out)
        if args.llama_imatrix and args.repeat > 0:
            row["timing"] = section_timing(run)
        report.append(row)
    if args.json:
        for row in report:
            row.get("matrix", {}).pop("per_tensor", None)
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
