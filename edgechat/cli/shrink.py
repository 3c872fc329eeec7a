"""`shrink`: the smallest quant of a model that holds up on your own text, in one command
(lab/shrink.py does the work; this parses, shows progress and renders)."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from edgechat.cli.common import _clear_line, _request, _size, _warn
from edgechat.cli.table import num, pad, size, wrap

HELP = "the smallest quant of a model that holds up on your own text (calibrate, judge, pick)"
DESCRIPTION = (
    "From one F16, BF16 or Q8_0 model: split your text into a calibration part and a "
    "held-out part, make an importance matrix from the first, quantise each type with and "
    "without it, score each against the source on the held-out part (mean and 99th "
    "percentile KL divergence, top-1 agreement, perplexity ratio), time it here, and name "
    "the smallest that meets the task's budget and fits this machine. Every score is kept "
    "as a receipt that `models info` and `recommend` show."
)


def _budget_text(text: str) -> str:
    """Checked here (usage error, exit 2); applied to the task's budget when it runs."""
    from edgechat.planning.budget import parse

    try:
        parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _types(text: str) -> tuple[str, ...]:
    from edgechat.lab.quantize import TYPES

    types = tuple(t.strip().upper() for t in text.split(",") if t.strip())
    bad = [t for t in types if t not in TYPES]
    if bad or not types:
        raise argparse.ArgumentTypeError(
            f"unknown type {bad[0] if bad else '(none)'}; choose from {', '.join(TYPES)}"
        )
    return types


def register(sub) -> None:
    from edgechat.cli.options import add_json, add_model_options
    from edgechat.limits import choices, flag
    from edgechat.planning.budget import DEFAULTS

    grouped: dict[str, list[str]] = {}
    for task, budget in DEFAULTS.items():
        grouped.setdefault(budget.describe(), []).append(task)
    budgets = " ".join(f"{' and '.join(t)}: {words}." for words, t in grouped.items())
    p = sub.add_parser("shrink", help=HELP, description=f"{DESCRIPTION} Budgets: {budgets}")
    p.add_argument("source", metavar="SOURCE", help="an F16, BF16 or Q8_0 GGUF, or installed id")
    p.add_argument(
        "--text", required=True, nargs="+", action="extend", metavar="FILE", help="your own text"
    )
    p.add_argument("--task", choices=choices("task"), default="chat", help="what for (chat)")
    p.add_argument(
        "--budget",
        type=_budget_text,
        metavar="LIMITS",
        help="the quality a pick must keep, over the task's default: kld (mean KL "
        "divergence), p99 (its 99th percentile), ppl (perplexity ratio), top1 (agreement), "
        "like kld=0.05,top1=0.9",
    )
    p.add_argument(
        "--types", type=_types, metavar="T,T", help="the types to try (default: by task)"
    )
    p.add_argument(
        "--chunks",
        type=flag("chunks"),
        metavar="N",
        help="at most N chunks to calibrate on and N to score (default: all the text gives)",
    )
    p.add_argument("--keep", metavar="ID", help="install the pick under this model id")
    p.add_argument("--work", metavar="DIR", help="where candidates go (default: the cache dir)")
    add_model_options(p, model_flag=False, ctx_default=512, ctx_flag="chunk")  # chunk size
    add_json(p, "print the candidates, the figures and the verdict as JSON")
    p.set_defaults(func=cmd_shrink)


def _progress():
    """The stage, its count and the whole run's time left, through the CLI's one
    renderer (cli/progress.py): a line a stage on a pipe."""
    from edgechat.cli.progress import Bar, left

    bar = Bar()

    def show(step) -> None:
        count = f" {step.done}/{step.total}" if step.total > 1 else ""
        whole = (step.number - 1 + step.done / max(step.total, 1)) / max(step.steps, 1)
        bar(whole, f"[{step.number}/{step.steps}] {step.label}{count}{left(step.eta_s)}")

    return show


def cmd_shrink(args) -> int:
    from edgechat.llama import backend

    backend.load()  # llama.cpp before numpy: see llama/backend.py
    from edgechat import config
    from edgechat.lab.shrink import Interrupted, ShrinkRequest, check_keep_id, keep, shrink
    from edgechat.planning.budget import parse
    from edgechat.tasks import documents

    settings = config.load()
    if args.keep:
        check_keep_id(args.keep)
    texts = []
    for source in args.text:
        name, text = documents.read_text(source, exact=True, purpose="calibrate and score (--text)")
        texts.append(("standard input" if source == "-" else Path(name).name, text))
    request = ShrinkRequest(
        source=_request(args, settings, model=args.source),
        texts=tuple(texts),
        task=args.task,
        budget=parse(args.budget, args.task) if args.budget else None,
        types=args.types or (),
        chunks=args.chunks,
        work=Path(args.work).expanduser() if args.work else None,
        run_ctx=settings.ctx,
        inputs=tuple(Path(t) for t in args.text if t != "-"),
    )
    try:
        result = shrink(request, progress=_progress(), say=_warn)
    except Interrupted as stop:
        _clear_line()
        kept = ", ".join(stop.kept) or "no finished candidate yet"
        sys.stderr.write(
            f"\ninterrupted; kept in {stop.work}: {kept} (run the same command to carry on)\n"
        )
        return 130
    _clear_line()
    kept = keep(result, args.keep) if args.keep and result.verdict.pick else None
    if args.json:
        print(json.dumps({**result.as_dict(), "kept": kept}, indent=2))
        return 0 if not args.keep or kept else 1
    _render(result, settings.ctx)
    if args.keep and not kept:
        _warn(f"nothing kept under {args.keep}: no candidate qualified")
        return 1
    if kept:
        print(f"kept      {result.verdict.pick} as {kept['id']} ({kept['path']})")
    return 0


def _render(result, run_ctx: int) -> None:
    from edgechat.cli.picture import quality_vs_size
    from edgechat.text import plural

    v = result.verdict
    t = result.text
    print(
        f"source    {Path(result.source).name} ({result.source_quant}, "
        f"{_size(result.source_size)}); {result.task}; chunks of {plural(result.n_ctx, 'token')}"
    )
    print(
        f"text      {t['name']}: {plural(t['tokens'], 'token')}, "
        f"{plural(t['calibration']['chunks'], 'chunk')} to calibrate, "
        f"{plural(t['held_out']['chunks'], 'other')} to score"
    )
    print()
    print(
        f"{'candidate':<15} {'size':>8} {'bits':>4} {'KLD':>7} {'p99':>6} {'top-1':>6} "
        f"{'PPL x':>6} {'tok/s':>6} {'RAM':>8}  ok"
    )
    for c in sorted(result.candidates, key=lambda c: c.size, reverse=True):
        f = c.figures
        ok = "-" if f is None else ("yes" if not v.misses.get(c.id) else "no")
        ok = "pick" if c.id == v.pick else ok
        figures = (
            f"{num(f.kl_mean, 7, 4)} {num(f.kl_p99 or 0, 6, 3)} {num(100 * f.top1, 6, 1, '%')} "
            f"{num(f.ppl_ratio, 6, 3)}"
            if f
            else f"{'-':>7} {'-':>6} {'-':>6} {'-':>6}"
        )
        ram = size(c.ram_needed, 8) + ("!" if not c.fits else " ")
        print(
            f"{pad(c.id, 15)} {size(c.size, 8)} {num(c.bits_per_weight, 4)} {figures} "
            f"{num(c.tokens_per_s or None, 6)} {ram} {ok}"
        )
    for cid, why in result.failed.items():
        print("\n".join(wrap(f"{pad(cid, 15)} failed: {why}", 16, first=0)))
    print(f"(RAM: what it needs here at {run_ctx} tokens of context; ! does not fit)")
    print()
    points = [(c.id, c.size, c.figures.kl_mean) for c in result.candidates if c.figures]
    for line in quality_vs_size(points, v.budget.kl_mean, v.pick):
        print(line)
    print()
    limits = ", ".join(c.replace(" ", "\xa0") for c in v.budget.describe().split(", "))
    for head, words in (("budget", f"{v.budget.task}: {limits}"), ("verdict", v.why)):
        for line in textwrap.wrap(
            f"{head:<9} {words}", 80, subsequent_indent=" " * 10, break_on_hyphens=False
        ):
            print(line.replace("\xa0", " "))  # a limit is never cut in two
    print(f"work      {result.work} (candidates stay there until you delete them)")
