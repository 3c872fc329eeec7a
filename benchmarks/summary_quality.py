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
- ETA: the first whole-run estimate shown (elapsed + ETA) against the real total;
- the check against the source (issue 33): each text is summarised with the check off
  (the model's own words) and on; for both, the quotes, numbers and names the summary
  gives and how many of them the document supports (judged by the same matching), the
  facts kept, the sentences rewritten and dropped (and the source's own sentences put in
  to keep the band), the seconds the run took and the
  check's own share of them (the rewriting calls are in the run's seconds);
- the index: how long the matching's index takes to build over ``--index-mb`` MB of
  these texts, and to judge one sentence against it.

    python benchmarks/summary_quality.py [--model smollm2|gemma|all] [--length medium]
        [--texts gpl-3.0,mit] [--ctx 2048] [--index-mb 20] [--json]
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
from edgechat.tasks.grounding import SourceIndex
from edgechat.tasks.summarise import Options, Summariser
from edgechat.tasks.summary_check import claims, spans
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


def grounded(summary: str, source: SourceIndex) -> dict[str, list[int]]:
    """Per kind (quote, number, name), [supported, found] in ``summary``."""
    out = {"quote": [0, 0], "number": [0, 0], "name": [0, 0]}
    for span in claims(summary, [source]):
        kind = "quote" if span.kind == "link" else span.kind
        out[kind][0] += span.ok
        out[kind][1] += 1
    return out


def score(engine: Engine, name: str, length: str, check: bool) -> dict:
    path = TEXTS / f"{name}.txt"
    doc = open_document(str(path))
    etas = []
    started = time.perf_counter()

    def progress(p) -> None:
        if p.eta_s and not etas:
            etas.append(time.perf_counter() - started + p.eta_s)

    options = Options(length, check=check)
    s = Summariser(engine, options, Sampling(temperature=0.0), progress=progress)
    result = s.run(doc.paragraphs, doc.size)
    total = time.perf_counter() - started
    facts = FACTS[name]
    found = [f for f, pattern in facts.items() if re.search(pattern, result.text, re.I)]
    with SourceIndex(path.read_text()) as source:
        claims = grounded(result.text, source)
    done = result.check
    return {
        "text": name,
        "check": check,
        **{f"{kind}s": claims[kind] for kind in claims},
        "rewritten": done.done("repaired") if check else 0,
        "dropped": done.done("dropped") if check else 0,
        "filled": len(done.filled) if check else 0,
        "check_s": round(done.seconds, 3) if check else 0.0,
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
    ap.add_argument("--index-mb", type=float, default=20, help="the index's size test (0: none)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    rows = []
    for label, path in models().items():
        if args.model != "all" and args.model not in label.lower():
            continue
        with Engine(RunPlan(path, n_ctx=args.ctx, n_threads=args.threads)) as engine:
            for name in args.texts.split(","):
                for check in (False, True):
                    got = score(engine, name, args.length, check)
                    rows.append({"model": label, "length": args.length, **got})
                print(f"done: {label} {name}", file=sys.stderr)
    index = index_cost(args.index_mb) if args.index_mb else None
    if args.json:
        print(json.dumps({"rows": rows, "index": index}, indent=2, ensure_ascii=False))
        return 0
    table(rows)
    if index:
        print(
            f"index of {index['mb']:.0f} MB ({index['tokens']} tokens): built in "
            f"{index['build_s']:.1f} s, {index['sentence_ms']:.1f} ms to judge a sentence"
        )
    return 0


def index_cost(mb: float) -> dict:
    """The matching's index over ``mb`` MB of the texts, and one sentence judged."""
    paragraphs = [p for t in TEXTS.glob("*.txt") for p in t.read_text().split("\n\n") if p]
    started, size, i = time.perf_counter(), 0, 0
    with SourceIndex() as index:
        while size < mb * 2**20:
            para = f"{paragraphs[i % len(paragraphs)]} (copy {i})"
            index.add(para)
            size, i = size + len(para) + 2, i + 1
        built = time.perf_counter() - started
        sentence = (
            'It says "you are welcome to distribute it" (not "redistribute"), from 2015, '
            "v2.3, by Zaha Mendel of the FSF."
        )
        started = time.perf_counter()
        for _ in range(10):
            spans(sentence, [index])
        judged = (time.perf_counter() - started) / 10
        tokens = index.n_tokens
    return {"mb": size / 2**20, "tokens": tokens, "build_s": built, "sentence_ms": judged * 1e3}


def ratio(pair: list[int]) -> str:
    return f"{pair[0]}/{pair[1]}"


def table(rows: list[dict]) -> None:
    head = (
        f"{'model':<18} {'text':<10} {'chk':>3} {'quotes':>6} {'nums':>5} {'names':>5} "
        f"{'facts':>5} {'rw/dr/fl':>8} {'rep':>5} {'words':>5} {'band':>7} {'in':>2} {'whole':>5} "
        f"{'calls':>5} {'s':>6} {'chk s':>5} {'ETA@1':>5}"
    )
    print(head)
    for r in rows:
        band = f"{r['band'][0]}-{r['band'][1]}"
        eta = f"{r['eta_first_s']:.0f}" if r["eta_first_s"] else "-"
        print(
            f"{r['model'][:18]:<18} {r['text'][:10]:<10} {'on' if r['check'] else 'off':>3} "
            f"{ratio(r['quotes']):>6} {ratio(r['numbers']):>5} {ratio(r['names']):>5} "
            f"{r['facts']:>5} {r['rewritten']:>2}/{r['dropped']}/{r['filled']:<2} "
            f"{r['repeat_4gram']:>5.3f} "
            f"{r['words']:>5} {band:>7} {'y' if r['in_band'] else 'n':>2} "
            f"{'yes' if r['whole'] else 'no':>5} {r['calls']:>5} {r['seconds']:>6.1f} "
            f"{r['check_s']:>5.2f} {eta:>5}"
        )
    for check in (False, True):
        mine = [r for r in rows if r["check"] == check]
        share = sum(r["facts_share"] for r in mine) / max(1, len(mine))
        held = [sum(r[k][i] for r in mine for k in ("quotes", "numbers", "names")) for i in (0, 1)]
        print(
            f"check {'on ' if check else 'off'}: mean fact share {share:.2f}, "
            f"quotes/numbers/names supported {held[0]}/{held[1]}"
        )
    print(
        "quotes/nums/names: supported by the document / found in the summary; rw/dr/fl: "
        "sentences rewritten / dropped / the source's own put in to keep the band; "
        "ETA@1 = elapsed + ETA at the first estimate"
    )


if __name__ == "__main__":
    sys.exit(main())
