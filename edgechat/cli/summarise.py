"""`edgechat summarise`: documents in, one summary per document out, progress on stderr."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgechat.cli.common import _load_engine, _model_id, _warn


def _facts(result) -> dict:
    return {
        "words": result.words,
        "band": [result.band.low, result.band.high],
        "in_band": result.in_band,
        "trimmed": result.trimmed,
        "chunks": result.chunks,
        "levels": result.levels,
        "calls": len(result.calls),
        "tokens_in": result.tokens_in,
        "tokens_out": result.tokens_out,
        "seconds": round(result.seconds, 2),
        "engine_seconds": round(result.engine_seconds, 2),
        "check": result.check.as_dict() if result.check else None,
    }


def _say_checked(label: str, result) -> None:
    """One line on stderr when the check took something out of a summary."""
    line = result.check.line() if result.check else None
    if line:
        sys.stderr.write(f"edgechat: {label}{line} (--json lists them)\n")


def _as_text(named: list[tuple[str, str]]) -> str:
    """One summary alone; several, each under its name as a Markdown heading."""
    if len(named) == 1:
        return named[0][1]
    return "\n\n".join(f"## {name}\n\n{text}" for name, text in named)


def _summarise_each(args, engine, docs, sampling):
    """One summary per document (and one of them all with --combine)."""
    from edgechat.cli.progress import summary as summary_progress
    from edgechat.tasks.summarise import Options, Summariser

    several = len(docs) > 1
    results = []
    for doc in docs:
        name = Path(doc.name).name if doc.name != "stdin" else "stdin"
        summariser = Summariser(
            engine,
            Options(args.length, args.style, args.focus, not args.no_check),
            sampling,
            progress=summary_progress(f"{name}: " if several else ""),
        )
        result = summariser.run(doc.paragraphs, doc.size)
        _empty(result, name)
        _say_checked(f"{name}: " if several else "", result)
        results.append((doc.name, name, result))
    combined = None
    if args.combine and several:
        summariser = Summariser(
            engine,
            Options(args.length, args.style, args.focus, not args.no_check),
            sampling,
            progress=summary_progress("all: "),
        )
        combined = summariser.combine([r.text for _, _, r in results])
        _say_checked("all: ", combined)
    return results, combined


def _empty(result, name: str) -> None:
    from edgechat.errors import EdgechatError

    if result.text:
        return
    if result.check and result.check.changes:
        raise EdgechatError(
            f"every sentence the model wrote about {name} stated what the document does not "
            "say; try a larger model, or --no-check to see what it wrote"
        )
    raise EdgechatError(f"the model returned an empty summary of {name}; try a larger model")


def cmd_summarise(args) -> int:
    from edgechat import config, privacy
    from edgechat.errors import EdgechatError
    from edgechat.paths import output_path, write_atomic
    from edgechat.service import sampling as sampling_from
    from edgechat.tasks import documents

    privacy.go_offline()
    settings = config.load()
    if args.files.count("-") > 1:
        raise documents.InputError("standard input (-) can be given once")
    sampling = sampling_from(settings, args, temperature=0.3)
    # Before the work, and never over a document being summarised.
    out_path = output_path(args.out, args.force, inputs=args.files) if args.out else None
    docs = []
    try:  # every document is opened first: bad input fails before a model is loaded
        for f in args.files:
            docs.append(documents.open_document(f, warn=_warn))
        engine = _load_engine(args, settings)
        results, combined = _summarise_each(args, engine, docs, sampling)
    finally:
        for doc in docs:
            doc.close()
    several = len(docs) > 1
    named = [(name, r.text) for _, name, r in results]
    if combined is not None:
        named.append((f"All {len(results)} documents", combined.text))
    text = _as_text(named)
    if out_path is not None:
        try:
            write_atomic(out_path, text + "\n")
        except EdgechatError:
            print(text)  # the summary took minutes: never lose it to a bad path
            raise
    if args.json:
        out = {
            "summary": results[0][2].text if not several else None,
            "summaries": [
                {"source": source, "summary": r.text, **_facts(r)} for source, _, r in results
            ],
            "combined": {"summary": combined.text, **_facts(combined)} if combined else None,
            "sources": [source for source, _, _ in results],
            "model": _model_id(args, settings),
            "model_file": engine.info()["name"],
            "model_path": engine.info()["path"],
            "length": args.length,
            "style": args.style,
            "focus": args.focus,
            "temperature": sampling.temperature,
            "seed": args.seed,
            "n_ctx": engine.n_ctx,
        }
        if not several:
            out.update(_facts(results[0][2]))
        print(json.dumps(out, ensure_ascii=False, indent=2))
    elif not args.out:
        from edgechat.text import clean

        print(clean(text, keep_newlines=True))  # a model's (or a server's) text, not commands
    else:
        sys.stderr.write(f"summary written to {args.out}\n")
    return 0


def register(sub) -> None:
    from edgechat.cli.options import add_model_options, add_remote_options, add_sampling_options
    from edgechat.limits import choices

    summ = sub.add_parser(
        "summarise",
        aliases=["summarize"],
        help="summarise documents of any length, offline (text, Markdown, HTML, PDF, DOCX)",
    )
    summ.add_argument("files", nargs="+", metavar="FILE", help="files, or - for standard input")
    add_model_options(summ)
    summ.add_argument(
        "--length",
        choices=choices("length"),
        default="medium",
        help="short: 40-90 words, medium: 90-180, long: 180-350 (fewer for a short document)",
    )
    summ.add_argument("--style", choices=choices("style"), default="paragraph")
    summ.add_argument("--focus", metavar="TEXT", help="what the reader cares about")
    summ.add_argument(
        "--combine", action="store_true", help="with several files: also one summary of them all"
    )
    add_sampling_options(summ, "temperature", "seed")
    summ.add_argument(
        "--out", metavar="FILE", help="write the summary to FILE (--force replaces one)"
    )
    summ.add_argument(
        "--no-check",
        action="store_true",
        help="do not check the summary against the document (by default a sentence that "
        "quotes, numbers or names what the document does not hold is rewritten or dropped)",
    )
    summ.add_argument(
        "--json",
        action="store_true",
        help="print the summary and its stats as JSON (with what the check found and did)",
    )
    add_remote_options(summ)
    summ.set_defaults(func=cmd_summarise)
