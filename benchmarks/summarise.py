"""Summarising a long document: total time beside the engine's own time for the same calls.

The document is Debian's licence texts (real prose, ~300 KB) or a FILE you pass. The
engine's time is the sum over every call of llama.cpp's measured prompt-processing
and generation time; the overhead is everything else edgechat does (reading,
tokenizing, chunking, prompting). Target: 10 % or less.

    python benchmarks/summarise.py [FILE] [--ctx 2048] [--chars 60000] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from edgechat.llama.engine import Engine
from edgechat.planning.plan import RunPlan
from edgechat.tasks.documents import open_document
from edgechat.tasks.summarise import Options, Summariser

sys.path.insert(0, str(Path(__file__).parent))
from _models import models  # noqa: E402


def document(path: str | None, chars: int) -> Path:
    if path:
        return Path(path)
    out = Path("/tmp/edgechat-bench/licences.txt")
    out.parent.mkdir(parents=True, exist_ok=True)
    texts = [
        p.read_text(errors="replace")
        for p in sorted(Path("/usr/share/common-licenses").glob("*"))
        if p.is_file()
    ]
    out.write_text("\n\n".join(texts)[:chars])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", nargs="?")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--chars", type=int, default=60_000, help="cut the default document here")
    ap.add_argument("--model", choices=["smollm2", "gemma"], default="smollm2")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    path = document(args.file, args.chars)
    model = [p for name, p in models().items() if args.model in name.lower()][0]
    with Engine(RunPlan(model, n_ctx=args.ctx)) as engine:
        started = time.perf_counter()
        doc = open_document(str(path))
        result = Summariser(engine, Options("medium", "paragraph")).run(doc.paragraphs, doc.size)
        total = time.perf_counter() - started
    engine_s = result.engine_seconds
    out = {
        "document": str(path),
        "bytes": path.stat().st_size,
        "model": model.name,
        "n_ctx": args.ctx,
        "chunks": result.chunks,
        "levels": result.levels,
        "calls": len(result.calls),
        "tokens_in": result.tokens_in,
        "tokens_evaluated": sum(s.prompt_eval_tokens for s in result.calls),
        "tokens_out": result.tokens_out,
        "total_s": round(total, 2),
        "engine_s": round(engine_s, 2),
        "overhead_pct": round(100 * (total - engine_s) / engine_s, 2),
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:<17} {v}")
        print(f"target: overhead <= 10 %: {'met' if out['overhead_pct'] <= 10 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
