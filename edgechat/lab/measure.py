"""Measure what a plan really costs: load, fill the context, generate, read peak RSS.

Runs in a fresh child process (``python -m edgechat.lab.measure PLAN_JSON``) so the peak
belongs to that one model and nothing else. Used by the memory benchmark; the
figures it prints are what the memory model is checked against.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from edgechat.planning.plan import RunPlan, Sampling


def _vm_hwm() -> int:
    """Peak resident set of this process in bytes (Linux VmHWM), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


_BUFFER = re.compile(r"(\w[\w ]*?) (KV|compute|output|model|RS) buffer size\s*=\s*([0-9.]+) MiB")


def run_plan(plan: RunPlan, fill: float = 0.9, gen_tokens: int = 32) -> dict:
    """Load ``plan``, fill ``fill`` of its context with a prompt, generate, and measure."""
    from edgechat.llama.backend import LOG, load, state

    load()
    from edgechat.llama.engine import Engine

    before = _vm_hwm()
    mark = LOG.mark()
    t0 = time.perf_counter()
    engine = Engine(plan)
    load_s = time.perf_counter() - t0
    buffers: dict[str, float] = {}
    for line in list(LOG.lines)[-(LOG.total - mark) :]:
        m = _BUFFER.search(line)
        if m:
            key = f"{m.group(1).strip()} {m.group(2)}"
            buffers[key] = buffers.get(key, 0.0) + float(m.group(3))
    after_load = _vm_hwm()
    # A prompt of plain words, sized to fill the context less room for the reply.
    target = int(engine.n_ctx * fill) - gen_tokens
    words = "the quick brown fox jumps over the lazy dog and then runs far away . "
    text = words * max(1, target // 14 + 1)
    tokens = engine.tokenize(text, add_special=False)[: max(1, target - 40)]
    content = engine.detokenize(tokens) + "\n\nNow write a long story about a lighthouse."
    reply = engine.chat(
        [{"role": "user", "content": content}],
        Sampling(temperature=0, max_tokens=gen_tokens),
        drop_oldest=False,
    )
    reply.collect()
    peak = _vm_hwm()
    return {
        "plan": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(engine.plan).items()},
        "n_ctx": engine.n_ctx,
        "ctx_used": reply.stats.n_ctx_used,
        "rss_before_load": before,
        "rss_after_load": after_load,
        "rss_peak": peak,
        "gen_tokens_per_s": reply.stats.gen_tps,
        "gen_tokens": reply.stats.gen_tokens,
        "prompt_tokens": reply.stats.prompt_eval_tokens,
        "prompt_tokens_per_s": reply.stats.prompt_tps,
        "ttft_s": reply.stats.ttft_s,
        "load_s": load_s,
        "llama_buffers_mib": buffers,
        "backend": state(),
    }


def measure(plan: RunPlan, fill: float = 0.9, gen_tokens: int = 32) -> dict:
    """``run_plan`` in a fresh process."""
    spec = json.dumps(
        {**asdict(plan), "model_path": str(plan.model_path), "fill": fill, "gen": gen_tokens}
    )
    out = subprocess.run(
        [sys.executable, "-m", "edgechat.lab.measure", spec],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        import signal

        from edgechat.errors import EdgechatError

        lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit code {out.returncode}"
        if out.returncode < 0:  # a native fault in llama.cpp: the child alone died
            sig = (
                signal.Signals(-out.returncode).name
                if -out.returncode in signal.valid_signals()
                else -out.returncode
            )
            why = f"llama.cpp crashed ({sig}); `edgechat doctor` checks the CPU kernels"
        raise EdgechatError(f"measuring {Path(plan.model_path).name} failed: {why}")
    return json.loads(out.stdout)


if __name__ == "__main__":
    from edgechat.llama import backend

    backend.load()  # first thing in the child: llama.cpp before anything imports numpy
    args = json.loads(sys.argv[1])
    fill = args.pop("fill", 0.9)
    gen = args.pop("gen", 32)
    args["model_path"] = Path(args["model_path"])
    from edgechat.errors import EdgechatError

    try:
        print(json.dumps(run_plan(RunPlan(**args), fill=fill, gen_tokens=gen)))
    except EdgechatError as e:
        sys.exit(str(e))  # one line on stderr, for measure() to pass on
