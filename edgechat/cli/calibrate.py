"""`calibrate`: an importance matrix of a model on the user's own text (and the
calibration `quantize --calibrate` runs before it quantises)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from edgechat.cli.common import _clear_line, _counter, _request, _warn


def calibrated(args, settings, model: str, texts: list[str]):
    """The importance matrix of ``model`` on ``texts``, on the plan every command that
    loads a model uses (threads, GPU layers, the fit check), with progress and an ETA."""
    from edgechat.lab.calibrate import calibrate
    from edgechat.service import plan_model

    planned = plan_model(_request(args, settings, model=model), say=_warn, what="the model")
    try:
        return calibrate(
            planned.plan,
            [Path(t) for t in texts],
            ctx=args.ctx,
            chunks=args.chunks,
            progress=_counter("calibrating: chunk"),
        )
    finally:
        _clear_line()


def cmd_calibrate(args) -> int:
    from edgechat.llama import backend

    backend.load()  # llama.cpp before numpy: see llama/backend.py
    from edgechat import config
    from edgechat.lab import imatrix
    from edgechat.lab.calibrate import check_texts, quantised_source
    from edgechat.models import registry

    check_texts(args.text)  # what the user typed last is the likeliest slip: said first
    settings = config.load()
    path = registry.resolve(args.model, settings.default_model, what="the MODEL argument")
    if args.out:
        out = Path(args.out).expanduser()
    else:
        named = Path(args.model).expanduser().is_file()
        out = imatrix.default_path(path, named, args.model)
    imatrix.check_out(out, args.force, inputs=[path, *args.text])
    quantised = quantised_source(path)
    if quantised:
        _warn(
            f"warning: {path.name} is {quantised}: a matrix measured on a quantised model is "
            "less exact than one from its F16/BF16 file; calibrate that if you have it"
        )
    started = time.perf_counter()
    matrix = calibrated(args, settings, args.model, args.text)
    imatrix.save(matrix, out)
    result = {
        "path": str(out),
        "model": str(path),
        "datasets": list(matrix.datasets),
        "chunks": matrix.chunk_count,
        "chunk_size": matrix.chunk_size,
        "tokens": matrix.chunk_count * matrix.chunk_size,
        "tensors": len(matrix),
        "seconds": round(time.perf_counter() - started, 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"wrote {out}: {len(matrix)} weights, {matrix.chunk_count} chunks of "
            f"{matrix.chunk_size} tokens, in {result['seconds']:.1f} s"
        )
        again = " --allow-requantize" if quantised else ""  # what quantize will accept
        print(
            f"use it: edgechat quantize {path.name} OUT.gguf --type IQ4_XS --imatrix {out}{again}"
        )
    return 0


def add_calibration_options(p) -> None:
    from edgechat.limits import flag

    p.add_argument(
        "--chunks",
        type=flag("chunks"),
        metavar="N",
        help="use the first N chunks of the text (default: all of it)",
    )


def register(sub) -> None:
    from edgechat.cli.options import add_json, add_model_options

    cal = sub.add_parser(
        "calibrate",
        help="an importance matrix of a model on your own text, for better small quants",
        description="Run the model over your text and record how strongly each weight's "
        "inputs are used (llama-imatrix's statistics, in its GGUF format), so `quantize "
        "--imatrix` keeps precision where your text needs it. Calibrate the full-precision "
        "model (F16, BF16 or Q8_0). Writes MODEL.imatrix.gguf beside a model file you "
        "name, else (an installed model) in the data dir's imatrix/ folder; --force also "
        "replaces an existing matrix.",
    )
    cal.add_argument("model", metavar="MODEL", help="a GGUF file path or an installed model id")
    cal.add_argument(
        "--text", required=True, nargs="+", metavar="FILE", help="your own text (plain text)"
    )
    cal.add_argument("--out", metavar="PATH", help="where to write the matrix (.gguf)")
    add_model_options(cal, model_flag=False, ctx_default=512, ctx_flag="chunk")  # chunk size
    add_calibration_options(cal)
    add_json(cal, "print the result as JSON")
    cal.set_defaults(func=cmd_calibrate)
