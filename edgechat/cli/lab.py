"""`bench`, `quality`, `quantize`: measuring and making models on this machine
(`calibrate`, and `quantize --calibrate`'s first step, are in cli/calibrate.py)."""

from __future__ import annotations

import json
from pathlib import Path

from edgechat.cli.common import _clear_line, _counter, _request, _size, _warn


def _planned(args, settings, model: str | None):
    """The plan `chat` would load for ``model``, with the same options and fit check."""
    from edgechat.errors import EdgechatError, ModelNotFound
    from edgechat.service import plan_model

    try:
        request = _request(args, settings, model=model)
        return plan_model(request, say=_warn, what="the MODEL argument")
    except ModelNotFound:
        raise
    except EdgechatError as e:
        name = Path(model).name if model else "the default model"
        raise EdgechatError(f"measuring {name} failed: {e}") from None


def cmd_bench(args) -> int:
    from edgechat import config
    from edgechat.lab.bench import bars, bench

    settings = config.load()
    models = []
    for m in args.models or [None]:
        planned = _planned(args, settings, m)
        if args.kernels:
            models += _kernel_variants(planned.label, planned.plan)
        else:
            models.append((planned.label, planned.plan))
    shown: dict = {}  # one bar per model
    results = bench(
        models,
        max(1, args.repeat),
        args.tokens,
        progress=lambda label, i, n: shown.setdefault(label, _counter(f"{label}: run"))(i, n),
    )
    _clear_line()
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


def _kernel_variants(label: str, plan) -> list:
    """``plan`` on each set of llama.cpp's CPU kernels that passed this machine's check
    (bench --kernels): auto's choice first, marked, then the others it chose between."""
    from dataclasses import replace

    from edgechat.errors import EdgechatError
    from edgechat.facts import kernels

    verdict = kernels.remembered()
    if verdict is None:
        raise EdgechatError(
            "llama.cpp's CPU kernels have not been checked here yet; run `edgechat doctor "
            "--check-kernels` (or load any model) first"
        )
    auto = kernels.choose("auto", verdict.available, verdict)
    out = [(f"{label} auto={kernels.setting_of(auto.names)}", replace(plan, cpu_kernels="auto"))]
    seen = {auto.names}
    for setting in ("amx", "repack", "plain"):
        names = kernels.choose(setting, verdict.available, verdict).names
        passed = all(r is not None and r.ok for r in (verdict.result((n,)) for n in names))
        if names not in seen and passed:
            seen.add(names)
            out.append((f"{label} {setting}", replace(plan, cpu_kernels=setting)))
    return out


def cmd_quality(args) -> int:
    from edgechat.llama import backend

    backend.load()  # llama.cpp before numpy: see llama/backend.py
    from edgechat import config
    from edgechat.lab.quality import compare, keep_receipt
    from edgechat.models.receipts import receipts_file
    from edgechat.service import load, plan_model
    from edgechat.tasks import documents

    settings = config.load()
    _, text = documents.read_text(args.text, exact=True, purpose="score (--text)")
    plans = [
        plan_model(_request(args, settings, model=m), say=_warn, what=what)
        for m, what in ((args.model, "the MODEL argument"), (args.ref, "--ref"))
    ]
    paths_ = [p.plan.model_path for p in plans]
    model = load(plans[0], args.verbose).engine
    try:
        ref = load(plans[1], args.verbose).engine
        try:
            q = compare(model, ref, text, args.ctx, progress=_counter("chunk"))
        finally:
            ref.close()
    finally:
        model.close()
    _clear_line()
    receipt = keep_receipt(q, "standard input" if args.text == "-" else Path(args.text).name, text)
    if args.json:
        print(json.dumps({**q.as_dict(), "receipt": receipt.as_dict()}, indent=2))
        return 0
    print(f"text      {args.text}: {q.chunks} chunks of {q.n_ctx}, {q.tokens_scored} tokens scored")
    print(f"{'':<10}{'perplexity':>12}")
    print(f"{'model':<10}{q.ppl:>12.4f}  {paths_[0].name}")
    print(f"{'ref':<10}{q.ppl_ref:>12.4f}  {paths_[1].name}")
    print(f"delta     {q.ppl_delta_pct:+.2f} %")
    print(f"KL        {q.kl_mean:.5f} (mean, model from ref), 99th percentile {q.kl_p99:.5f}")
    print(f"top-1     {100 * q.top1_agreement:.2f} % same next token")
    print(f"kept      a receipt of these figures ({receipts_file()})")
    return 0


def cmd_quantize(args) -> int:
    from edgechat.llama import backend

    backend.load()  # llama.cpp before numpy: see llama/backend.py
    from edgechat.lab import imatrix
    from edgechat.lab.quantize import preflight, quantize

    warn = lambda text: _warn(f"warning: {text}")  # noqa: E731
    matrix = imatrix.load(args.imatrix) if args.imatrix else None
    if args.calibrate:
        from edgechat import config
        from edgechat.cli.calibrate import calibrated

        src, dst = Path(args.src).expanduser(), Path(args.dst).expanduser()
        # Everything quantize would refuse, refused before the calibration, not after.
        preflight(src, dst, args.type, args.recipe, args.allow_requantize, args.force, True)
        matrix = calibrated(args, config.load(), str(src), args.calibrate)
    result = quantize(
        args.src,
        args.dst,
        args.type,
        args.recipe,
        args.allow_requantize,
        threads=args.threads or 0,
        progress=_counter("tensor"),
        warn=warn,
        imatrix=matrix,
        force=args.force,
    )
    _clear_line()
    out = {
        "path": str(result.path),
        "type": result.type,
        "recipe": result.recipe,
        "size_in": result.size_in,
        "size_out": result.size_out,
        "bits_per_weight": round(result.bits_per_weight, 3),
        "imatrix": args.imatrix or ("calibrated" if matrix is not None else None),
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(
            f"wrote {result.path}: {result.type} ({result.recipe}), {_size(result.size_in)} -> "
            f"{_size(result.size_out)}, {result.bits_per_weight:.2f} bits per weight"
        )
    return 0


def register(sub) -> None:
    from edgechat.cli.options import add_json, add_model_options
    from edgechat.limits import choices, flag

    ben = sub.add_parser("bench", help="measure load, prompt and generation speed, TTFT, memory")
    ben.add_argument(
        "models", nargs="*", metavar="MODEL", help="paths or ids (default: the default)"
    )
    add_model_options(ben, model_flag=False, ctx_default=2048)
    ben.add_argument(
        "--repeat", type=flag("repeat"), default=3, metavar="N", help="runs per model (3)"
    )
    ben.add_argument(
        "--tokens", type=flag("tokens"), default=128, metavar="N", help="tokens to generate"
    )
    ben.add_argument(
        "--kernels",
        action="store_true",
        help="each model on every set of llama.cpp's CPU kernels that passed this machine's "
        "check (AMX, repacked weights, plain), auto's choice marked",
    )
    add_json(ben, "print the table as JSON")
    ben.set_defaults(func=cmd_bench)

    qual = sub.add_parser(
        "quality", help="perplexity, KL divergence and top-1 agreement against a reference"
    )
    qual.add_argument("model", help="the model to judge (path or id)")
    qual.add_argument("--ref", required=True, help="the reference (e.g. the F16 or Q8_0 file)")
    qual.add_argument("--text", required=True, metavar="FILE", help="your own text")
    add_model_options(qual, model_flag=False, ctx_default=512, ctx_flag="chunk")  # chunk size
    add_json(qual, "print the figures as JSON")
    qual.set_defaults(func=cmd_quality)

    qnt = sub.add_parser("quantize", aliases=["quantise"], help="quantise a GGUF model yourself")
    qnt.add_argument("src", metavar="IN.gguf")
    qnt.add_argument("dst", metavar="OUT.gguf")
    qnt.add_argument("--type", required=True, help="Q4_K_M, Q5_K_M, Q6_K, Q8_0, Q4_0 ...")
    qnt.add_argument(
        "--recipe",
        choices=choices("recipe"),
        default="mixed",
        help="mixed keeps embeddings and output head at higher precision",
    )
    qnt.add_argument(
        "--allow-requantize",
        action="store_true",
        help="quantise a file that is already quantised (loses quality)",
    )
    qnt.add_argument(
        "--force",
        action="store_true",
        help="replace OUT if it exists (and calibrate even where the memory estimate says no)",
    )
    weigh = qnt.add_mutually_exclusive_group()
    weigh.add_argument(
        "--imatrix",
        metavar="FILE",
        help="an importance matrix (from `edgechat calibrate` or llama-imatrix)",
    )
    weigh.add_argument(
        "--calibrate",
        nargs="+",
        metavar="TEXT",
        help="calibrate IN on these text files first, then quantise with that matrix",
    )
    qnt.add_argument(
        "--ctx", type=flag("chunk"), default=512, metavar="N", help="calibration chunk (512)"
    )
    qnt.add_argument(
        "--chunks", type=flag("chunks"), metavar="N", help="calibrate on the first N chunks"
    )
    qnt.add_argument(
        "--threads", type=flag("threads"), metavar="N", help="CPU threads (default: all cores)"
    )
    qnt.add_argument(
        "--gpu-layers",
        type=flag("gpu_layers"),
        metavar="N",
        help="layers on the GPU while calibrating (default: all that fit)",
    )
    add_json(qnt, "print the result as JSON")
    qnt.set_defaults(func=cmd_quantize)
