"""`bench`, `quality`, `quantize`: measuring and making models on this machine."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgechat.cli.common import _counter, _size


def cmd_bench(args) -> int:
    from edgechat import config
    from edgechat.lab.bench import bars, bench
    from edgechat.models import registry

    settings = config.load()
    wanted = args.models or [None]
    models = []
    for m in wanted:
        path = registry.resolve(m, settings.default_model, what="the MODEL argument")
        label = path.name if m is None or Path(m).expanduser().is_file() else m
        models.append((label, path))
    results = bench(
        models,
        args.ctx,
        max(1, args.repeat),
        args.tokens,
        progress=lambda label, i, n: _counter(f"{label}: run")(i, n),
    )
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
        return 0
    print(f"medians of {args.repeat} runs, context {args.ctx}, greedy")
    print(
        f"{'model':<36} {'load s':>7} {'prompt t/s':>10} {'gen t/s':>8} {'TTFT s':>7} "
        f"{'peak RSS':>9}"
    )
    for r in results:
        print(
            f"{r.model[:36]:<36} {r.load_s:>7.2f} {r.prompt_tokens_per_s:>10.1f} "
            f"{r.gen_tokens_per_s:>8.1f} {r.ttft_s:>7.3f} {_size(r.rss_peak):>9}"
        )
    print()
    for line in bars(results):
        print(line)
    return 0


def cmd_quality(args) -> int:
    from edgechat.llama import backend

    backend.load()  # llama.cpp before numpy: see llama/backend.py
    from edgechat import config
    from edgechat.lab.quality import compare
    from edgechat.llama.engine import Engine
    from edgechat.models import registry
    from edgechat.planning.plan import RunPlan
    from edgechat.tasks import documents

    settings = config.load()
    _, text = documents.read_text(args.text, exact=True, purpose="score (--text)")
    paths_ = [
        registry.resolve(m, settings.default_model, what=what)
        for m, what in ((args.model, "the MODEL argument"), (args.ref, "--ref"))
    ]
    model, ref = (Engine(RunPlan(p, n_ctx=args.ctx)) for p in paths_)
    try:
        q = compare(model, ref, text, args.ctx, progress=_counter("chunk"))
    finally:
        model.close()
        ref.close()
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
    if args.json:
        print(json.dumps(q.as_dict(), indent=2))
        return 0
    print(f"text      {args.text}: {q.chunks} chunks of {q.n_ctx}, {q.tokens_scored} tokens scored")
    print(f"{'':<10}{'perplexity':>12}")
    print(f"{'model':<10}{q.ppl:>12.4f}  {paths_[0].name}")
    print(f"{'ref':<10}{q.ppl_ref:>12.4f}  {paths_[1].name}")
    print(f"delta     {q.ppl_delta_pct:+.2f} %")
    print(f"KL        {q.kl_mean:.5f} (mean, model from ref)")
    print(f"top-1     {100 * q.top1_agreement:.2f} % same next token")
    return 0


def cmd_quantize(args) -> int:
    from edgechat.lab.quantize import quantize

    result = quantize(
        args.src,
        args.dst,
        args.type,
        args.recipe,
        args.allow_requantize,
        progress=_counter("tensor"),
        warn=lambda text: sys.stderr.write(f"edgechat: warning: {text}\n"),
    )
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
    out = {
        "path": str(result.path),
        "type": result.type,
        "recipe": result.recipe,
        "size_in": result.size_in,
        "size_out": result.size_out,
        "bits_per_weight": round(result.bits_per_weight, 3),
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(
            f"wrote {result.path}: {result.type} ({result.recipe}), {_size(result.size_in)} -> "
            f"{_size(result.size_out)}, {result.bits_per_weight:.2f} bits per weight"
        )
    return 0
