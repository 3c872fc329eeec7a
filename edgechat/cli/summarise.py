"""`edgechat summarise`: documents in, a summary out, progress on stderr."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgechat.cli.common import _load_engine, _warn


def _progress_printer():
    """Chunks done of total and ETA on stderr: redrawn on a terminal, a line each otherwise."""
    tty = sys.stderr.isatty()

    def show(p) -> None:
        total = f"/{p.total}" if p.total else ""
        eta = (
            f", about {p.eta_s:.0f} s left"
            if p.eta_s is not None and p.done < (p.total or 0)
            else ""
        )
        what = {"map": "reading", "reduce": "combining", "final": "writing the summary"}[p.stage]
        line = f"{what}: {p.done}{total}{eta}" if p.stage != "final" else what
        if tty:
            sys.stderr.write(f"\r\033[K{line}")
            if p.stage == "final" and p.done:
                sys.stderr.write("\n")
        elif p.stage != "final" or not p.done:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    return show


def cmd_summarise(args) -> int:
    from edgechat import config, privacy
    from edgechat.errors import EdgechatError
    from edgechat.service import sampling
    from edgechat.tasks import documents
    from edgechat.tasks.summarise import Options, Summariser

    privacy.go_offline()
    settings = config.load()
    if args.files.count("-") > 1:
        raise documents.InputError("standard input (-) can be given once")
    docs = []
    try:
        for f in args.files:  # bad input fails here, before a model is loaded
            docs.append(documents.open_document(f, warn=_warn))
        engine = _load_engine(args, settings)
        summariser = Summariser(
            engine,
            Options(args.length, args.style, args.focus),
            sampling(settings, args, temperature=0.3),
            progress=_progress_printer(),
        )
        sizes = [d.size for d in docs]
        result = summariser.run(documents.chained(docs), sum(sizes) if None not in sizes else None)
    finally:
        for doc in docs:
            doc.close()
    if not result.text:
        sys.stderr.write("edgechat: the model returned an empty summary; try a larger model\n")
        return 1
    if args.out:
        from edgechat.paths import write_atomic

        try:
            write_atomic(Path(args.out).expanduser(), result.text + "\n")
        except EdgechatError:
            print(result.text)  # the summary took minutes: never lose it to a bad path
            raise
    if args.json:
        out = {
            "summary": result.text,
            "sources": [d.name for d in docs],
            "model": engine.info()["name"],
            "model_path": engine.info()["path"],
            "length": args.length,
            "style": args.style,
            "focus": args.focus,
            "chunks": result.chunks,
            "levels": result.levels,
            "calls": len(result.calls),
            "tokens_in": result.tokens_in,
            "tokens_out": result.tokens_out,
            "seconds": round(result.seconds, 2),
            "engine_seconds": round(result.engine_seconds, 2),
            "n_ctx": engine.n_ctx,
        }
        print(json.dumps(out, ensure_ascii=False, indent=2))
    elif not args.out:
        print(result.text)
    else:
        sys.stderr.write(f"summary written to {args.out}\n")
    return 0
