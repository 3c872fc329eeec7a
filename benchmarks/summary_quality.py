"""Summary quality on real texts: the facts each summary must contain, repetition, length.

The texts are in tests/data/texts/ with their licences (README there): the GPL-3,
Apache-2.0 and MIT licence texts, the CC0 1.0 deed (public domain) and the Gettysburg
Address (public domain). For each model and text it summarises at one length, greedy,
and scores:

- facts: how many of the text's key facts the summary states (each fact is a set of
  accepted wordings, matched case-insensitively);
- repeat: the share of word 4-grams that occur more than once (a looping model scores
  high; 0 is best), and whether any sentence appears twice (forbidden);
- words, in band (the length's word band), whole (ends on a complete sentence),
  trimmed (a reply was cut and trimmed to whole sentences);
- ETA: the first whole-run estimate shown (elapsed + ETA) against the real total.

    python benchmarks/summary_quality.py [--model smollm2|gemma|all] [--length medium]
        [--texts gpl-3.0,mit] [--ctx 2048] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

from edgechat.llama.engine import Engine
from edgechat.planning.plan import RunPlan, Sampling
from edgechat.tasks.documents import open_document
from edgechat.tasks.summarise import Options, Summariser
from edgechat.tasks.summary_text import ends_sentence, sentences

sys.path.insert(0, str(Path(__file__).parent))
from _models import models  # noqa: E402

TEXTS = Path(__file__).resolve().parent.parent / "tests" / "data" / "texts"
# Each fact: a name and the wordings that state it.
FACTS = {
    "gpl-3.0": {
        "free software / freedom": r"free software|freedom",
        "source code": r"source code|corresponding source",
        "no warranty": r"warrant",
        "copying / conveying": r"\bconvey|distribut|\bcop(y|ies)",
        "modified versions": r"modif",
        "patents": r"patent",
    },
    "apache-2.0": {
        "copyright licence grant": r"grant|copyright licen[cs]e|perpetual",
        "patent licence": r"patent",
        "redistribution with notices": r"redistribut|notice",
        "trademarks": r"trademark",
        "no warranty": r"warrant|\bas is\b",
        "limited liability": r"liab",
    },
    "mit": {
        "free of charge": r"free of charge|without charge|\bfree\b",
        "use, copy, modify, distribute": r"\buse\b|\bcopy|modify|merge|publish|distribut|sell",
        "notice must be included": r"notice",
        "no warranty": r"warrant|\bas is\b",
        "no liability": r"liab",
    },
    "cc0-1.0": {
        "public domain": r"public domain",
        "waiver": r"waive|relinquish|surrender",
        "copyright and related rights": r"copyright|related rights",
        "fallback licence": r"licen[cs]e",
        "no warranty": r"warrant",
    },
    "gettysburg": {
        "a nation founded": r"nation|four score|fathers",
        "liberty and equality": r"libert|equal",
        "the civil war": r"civil war|\bwar\b",
        "dedicating the field": r"dedicat|consecrat|hallow|battle",
        "the dead did not die in vain": r"\bdead\b|\bdied\b|in vain|gave their lives",
        "government of the people": r"of the people|by the people|government",
    },
}


def repeat_share(text: str) -> float:
    """Share of word 4-grams that occur more than once."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    grams = Counter(zip(words, words[1:], words[2:], words[3:], strict=False))
    total = sum(grams.values())
    return sum(n for n in grams.values() if n > 1) / total if total else 0.0


def repeated_sentence(text: str) -> bool:
    keys = [re.sub(r"\W+", " ", s).strip().lower() for s in sentences(text)]
    keys = [k for k in keys if k]
    return len(keys) != len(set(keys))


def score(engine: Engine, name: str, length: str) -> dict:
    path = TEXTS / f"{name}.txt"
    doc = open_document(str(path))
    etas = []
    started = time.perf_counter()

    def progress(p) -> None:
        if p.eta_s and not etas:
            etas.append(time.perf_counter() - started + p.eta_s)

    s = Summariser(engine, Options(length), Sampling(temperature=0.0), progress=progress)
    result = s.run(doc.paragraphs, doc.size)
    total = time.perf_counter() - started
    facts = FACTS[name]
    found = [f for f, pattern in facts.items() if re.search(pattern, result.text, re.I)]
    return {
        "text": name,
        "facts": f"{len(found)}/{len(facts)}",
        "facts_share": round(len(found) / len(facts), 2),
        "missing": [f for f in facts if f not in found],
        "repeat_4gram": round(repeat_share(result.text), 3),
        "repeated_sentence": repeated_sentence(result.text),
        "words": result.words,
        "band": [result.band.low, result.band.high],
        "in_band": result.in_band,
        "whole": ends_sentence(result.text),
        "trimmed": result.trimmed,
        "chunks": result.chunks,
        "calls": len(result.calls),
        "seconds": round(total, 1),
        "eta_first_s": round(etas[0], 1) if etas else None,
        "summary": result.text,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["smollm2", "gemma", "all"], default="all")
    ap.add_argument("--length", choices=["short", "medium", "long"], default="medium")
    ap.add_argument("--texts", default=",".join(FACTS), help="comma-separated text names")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: physical cores)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    rows = []
    for label, path in models().items():
        if args.model != "all" and args.model not in label.lower():
            continue
        with Engine(RunPlan(path, n_ctx=args.ctx, n_threads=args.threads)) as engine:
            for name in args.texts.split(","):
                rows.append(
                    {"model": label, "length": args.length, **score(engine, name, args.length)}
                )
                print(f"done: {label} {name}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    head = (
        f"{'model':<20} {'text':<11} {'facts':>5} {'repeat':>6} {'dup':>3} {'words':>5} "
        f"{'band':>8} {'in':>3} {'whole':>5} {'trim':>4} {'calls':>5} {'s':>6} {'ETA@1':>6}"
    )
    print(head)
    for r in rows:
        band = f"{r['band'][0]}-{r['band'][1]}"
        eta = f"{r['eta_first_s']:.0f}" if r["eta_first_s"] else "-"
        print(
            f"{r['model']:<20} {r['text']:<11} {r['facts']:>5} {r['repeat_4gram']:>6.3f} "
            f"{'yes' if r['repeated_sentence'] else 'no':>3} {r['words']:>5} {band:>8} "
            f"{'yes' if r['in_band'] else 'no':>3} {'yes' if r['whole'] else 'no':>5} "
            f"{'yes' if r['trimmed'] else 'no':>4} {r['calls']:>5} {r['seconds']:>6.1f} {eta:>6}"
        )
    share = sum(r["facts_share"] for r in rows) / max(1, len(rows))
    print(f"\nmean fact share {share:.2f}; ETA@1 = elapsed + ETA at the first estimate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
