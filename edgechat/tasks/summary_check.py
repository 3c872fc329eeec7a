"""A summary checked against its source (issue 33): what it quotes, the numbers, dates
and versions it states, the names, identifiers and links it gives.

- A quotation (in any quotation marks, or backticks) is supported only by the same words
  in the source, in the same order (case, spacing and punctuation aside); "..." inside
  it may stand for words left out.
- A number only by the same number (1,000 = 1000; 7 = seven).
- A name by the name or a clear variant: another case, a possessive or plural, no
  accents, an acronym of the source's capitalised words, the parts of an identifier
  (GPLv3: GPL and 3). A capitalised word opening a sentence is not taken for a name.

A sentence that states something its sources do not support is written again with the
unsupported words named as forbidden (``regenerate``), and dropped when that fails too.
``Check`` records what was checked and what was changed, and why.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from edgechat.tasks.grounding import SourceIndex, number, supported, tokens
from edgechat.tasks.summary_text import ends_sentence, sentences, words

_LINK = re.compile(
    r"\b(?:https?://|ftp://|www\.)[^\s<>\"'“”‘’)\]]+[^\s<>\"'“”‘’)\].,;:!?]"
    r"|\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
)
_QUOTE = re.compile(
    r'"(?=\S)([^"\n]+?)(?<=\S)"'
    r"|“([^”\n]+)”|„([^“”\n]+)[“”]|«\s*([^»\n]+?)\s*»|‹\s*([^›\n]+?)\s*›"
    r"|「([^」\n]+)」|『([^』\n]+)』|‘([^\n]+?)’(?!\w)"
    r"|(?<![\w'])'(?=\S)([^'\n]+?)(?<=\S)'(?!\w)|`([^`\n]+)`"
)
# A quotation opened and never closed runs to the end of the sentence.
_OPEN = re.compile(r"(?:^|(?<=[\s(\[]))[\"“„«‘]\s*([^\"“”„«»‘’\n]*[^\W_][^\"“”„«»‘’\n]*)$")
_ELLIPSIS = re.compile(r"\s*(?:\[?(?:\.\s?){3}\]?|\[?…\]?)\s*")
_CHUNK = re.compile(r"(?:[^\s,;:()\[\]{}\"“”«»‹›!?*]|(?<=\d),(?=\d))+")
_EDGES = ".'’-_/"
_NUMERIC = re.compile(
    r"(?:[$€£¥]|[vV](?=\d))?(\d+(?:[.,]\d+)*)(?:%|st|nd|rd|th|s)?"
    r"|(\d+(?:[.,]\d+)*(?:[-–/]\d+(?:[.,]\d+)*)+)"  # a date or range: 2007-06-29, 10-20
)
_CONNECTOR = {"of", "for", "the", "de", "du", "des", "la", "le", "von", "van", "der", "&"}
_HEADING = re.compile(r"^\s*#{1,6}\s+")
_MARKER = re.compile(r"^\s*(?:#{1,6}|[-*•+]|\d+[.)])\s+")
_PRONOUN = re.compile(r"I(?:['’][a-z]+)?")  # I'll, I'm: not names
_PIECES = re.compile(r"\d+(?:[.,]\d+)*|[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[^\W\d_]+")


@dataclass(frozen=True)
class Span:
    kind: str  # quote | number | name | link
    text: str  # as the summary writes it
    ok: bool  # the source supports it

    def as_dict(self) -> dict:
        return {"kind": self.kind, "text": self.text, "supported": self.ok}


def _quote_ok(text: str, sources: Sequence[SourceIndex]) -> bool:
    runs = [tokens(part) for part in _ELLIPSIS.split(text)]
    runs = [r for r in runs if r]
    return all(supported(lambda s, r=r: s.has_run(r), sources) for r in runs)


def _piece_ok(piece: str, sources: Sequence[SourceIndex]) -> bool:
    if piece[0].isdigit():
        return supported(lambda s: s.has_number(number(piece)), sources)
    if len(piece) < 2:
        return True
    return all(supported(lambda s, w=w: s.has_word(w), sources) for w in tokens(piece))


def _name_ok(word: str, sources: Sequence[SourceIndex]) -> bool:
    """A word of a name or an identifier: as it is, or piece by piece (GPLv3, SmolLM2)."""
    run = tokens(word)
    if not run or supported(lambda s: s.has_run(run), sources):
        return True
    return all(_piece_ok(p, sources) for p in _PIECES.findall(word))


def _identifier(word: str) -> bool:
    """Written as a name whatever its place: GPL, GPLv3, iPhone, snake_case, os.path."""
    letters = [c for c in word if c.isalpha()]
    return (
        "_" in word.strip("_")
        or (len(letters) >= 2 and all(c.isupper() for c in letters))
        or any(a.islower() and b.isupper() for a, b in zip(word, word[1:], strict=False))
        or any(c.isdigit() for c in word)
        or bool(re.search(r"[^\W\d_]\.[^\W\d_]", word))
    )


def spans(sentence: str, sources: Sequence[SourceIndex], names: bool = True) -> list[Span]:
    """What ``sentence`` claims, each judged against ``sources`` (any one of them may
    support it). ``names``: False for a heading (its capitals are titling)."""
    found: list[Span] = []
    rest = sentence

    def mask(m: re.Match) -> str:
        return " ; " + " " * max(0, len(m.group(0)) - 3)

    for m in _LINK.finditer(rest):
        text = m.group(0)
        found.append(Span("link", text, _quote_ok(text, sources)))
    rest = _LINK.sub(mask, rest)
    for m in _QUOTE.finditer(rest):
        quoted = next(g for g in m.groups() if g is not None)
        if tokens(quoted):
            found.append(Span("quote", quoted, _quote_ok(quoted, sources)))
    rest = _QUOTE.sub(mask, rest)
    if m := _OPEN.search(rest):
        quoted = m.group(1).rstrip(" .,;:!?")
        found.append(Span("quote", quoted, _quote_ok(quoted, sources)))
        rest = rest[: m.start()]
    found.extend(_words(rest, sources, names))
    return found


def _words(rest: str, sources: Sequence[SourceIndex], names: bool) -> list[Span]:
    """Numbers, identifiers and runs of capitalised words (a name) in ``rest``."""
    found: list[Span] = []
    run: list[str] = []
    end = -1
    first = True

    def close() -> None:
        words = [w for w in run if w.lower() not in _CONNECTOR]
        while run and run[-1].lower() in _CONNECTOR:
            run.pop()
        if words:
            ok = all(_name_ok(w, sources) for w in words)
            found.append(Span("name", " ".join(run), ok))
        run.clear()

    for m in _CHUNK.finditer(rest):
        word = m.group(0).strip(_EDGES)
        if not word:
            continue
        start = m.start() + m.group(0).index(word[0])
        joined = rest[end:start].isspace() if end >= 0 else False
        initial, first = first, False
        if run and not joined:
            close()
        numeric = _NUMERIC.fullmatch(word)
        if numeric:
            close()
            n = numeric.group(1) or numeric.group(2)
            ok = all(_piece_ok(p, sources) for p in re.findall(r"\d+(?:[.,]\d+)*", n))
            found.append(Span("number", word, ok))
        elif _identifier(word) and names or any(c.isdigit() for c in word):
            close()
            kind = "name" if sum(c.isalpha() for c in word) >= 2 else "number"
            found.append(Span(kind, word, _name_ok(word, sources)))
        elif names and word[0].isupper() and len(word) > 1 and not _PRONOUN.fullmatch(word):
            if not initial:
                run.append(word)
        elif run and word.lower() in _CONNECTOR:
            run.append(word)
        else:
            close()
        end = m.start() + m.group(0).index(word[0]) + len(word)
    close()
    return found


@dataclass
class Change:
    level: str  # map (a chunk's partial summary) | part | summary
    sentence: str
    unsupported: list[Span]
    action: str  # repaired | dropped
    replacement: str = ""

    @property
    def why(self) -> str:
        said = {"quote": "quotes", "number": "states", "name": "names", "link": "links"}
        return "; ".join(
            f'{said[s.kind]} "{s.text}", which the source does not hold' for s in self.unsupported
        )

    def as_dict(self) -> dict:
        out = {"level": self.level, "sentence": self.sentence, "action": self.action}
        if self.replacement:
            out["replacement"] = self.replacement
        return out | {"why": self.why, "unsupported": [s.as_dict() for s in self.unsupported]}


@dataclass
class Check:
    """What the check of one summary found and did."""

    on: bool = True
    spans: list[Span] = field(default_factory=list)  # the printed summary's, checked
    changes: list[Change] = field(default_factory=list)
    filled: list[str] = field(default_factory=list)  # the source's sentences, for the band
    levels: dict[str, dict[str, int]] = field(default_factory=dict)  # spans checked, failed
    seconds: float = 0.0  # time spent checking (not regenerating)

    def count(self, level: str, found: list[Span]) -> None:
        n = self.levels.setdefault(level, {"checked": 0, "unsupported": 0})
        n["checked"] += len(found)
        n["unsupported"] += sum(not s.ok for s in found)

    def done(self, action: str) -> int:
        return sum(c.action == action for c in self.changes)

    def line(self) -> str | None:
        """One line for stderr when something was removed, else None."""
        fixed, dropped = self.done("repaired"), self.done("dropped")
        if not fixed and not dropped:
            return None
        what = [f"{n} {verb}" for n, verb in ((fixed, "rewritten"), (dropped, "dropped")) if n]
        noun = "sentence" if (fixed or dropped) == 1 else "sentences"
        what[0] = what[0].replace(" ", f" {noun} ", 1)  # 1 sentence rewritten and 2 dropped
        said = f"{' and '.join(what)}: they quoted, stated or named what the document does not say"
        if self.filled:
            n = len(self.filled)
            said += f"; {n} {'sentence' if n == 1 else 'sentences'} of the source in their place"
        return said

    def as_dict(self) -> dict:
        return {
            "on": self.on,
            "spans": [s.as_dict() for s in self.spans],
            "repaired": [c.as_dict() for c in self.changes if c.action == "repaired"],
            "dropped": [c.as_dict() for c in self.changes if c.action == "dropped"],
            "filled": self.filled,
            "levels": self.levels,
            "seconds": round(self.seconds, 3),
        }


# ``regenerate(before, sentence, avoid)``: the sentence written again after ``before``
# (the summary so far), without the words ``avoid``; "" when it cannot be.
Regenerate = Callable[[str, str, list[str]], str]


def edit(
    text: str,
    sources: Sequence[SourceIndex],
    check: Check,
    level: str,
    regenerate: Regenerate | None = None,
    kept_spans: list[Span] | None = None,
) -> str:
    """``text`` with each sentence its sources do not support written again or dropped;
    lines, list items and headings kept as they are. ``kept_spans`` receives the spans
    of the sentences kept."""
    lines: list[str] = []
    for line in text.split("\n"):
        if not line.strip():
            lines.append("")
            continue
        marker = _MARKER.match(line)
        prefix = marker.group(0) if marker else ""
        heading = bool(_HEADING.match(line))
        kept: list[str] = []
        for sentence in sentences(line[len(prefix) :]):
            found = spans(sentence, sources, names=not heading)
            check.count(level, found)
            bad = [s for s in found if not s.ok]
            if not bad:
                kept.append(sentence)
                if kept_spans is not None:
                    kept_spans.extend(found)
                continue
            new = ""
            if regenerate is not None:
                this_line = [prefix + " ".join(kept)] if kept else []
                before = "\n".join([*lines, *this_line]).strip()
                new = regenerate(before, sentence, [s.text for s in bad]).strip()
                again = spans(new, sources) if new else []
                check.count(level, again)
                if not new or not all(s.ok for s in again) or new in kept:
                    new = ""
            action = "repaired" if new else "dropped"
            check.changes.append(Change(level, sentence, bad, action, new))
            kept.extend([new] if new else [])
            if new and kept_spans is not None:
                kept_spans.extend(again)
        if kept:
            lines.append(prefix + " ".join(kept))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def claims(text: str, sources: Sequence[SourceIndex]) -> list[Span]:
    """Every span of ``text`` (lines, list items and headings read as ``edit`` reads them),
    judged against ``sources``."""
    found: list[Span] = []
    for line in text.split("\n"):
        body = line[len(m.group(0)) :] if (m := _MARKER.match(line)) else line
        for sentence in sentences(body):
            found += spans(sentence, sources, names=not _HEADING.match(line))
    return found


def final(text: str, sources: Sequence[SourceIndex], check: Check) -> str:
    """The printed summary, checked once more against the document (and the partial
    summaries): its spans recorded, anything unsupported dropped."""
    check.spans = []
    return edit(text, sources, check, "summary", kept_spans=check.spans)


def stand_ins(source: str, dropped: list[str], need: int, room: int, quote: bool) -> list[str]:
    """Sentences of ``source`` that keep a summary in its band when the check took
    sentences out and the model wrote none that held: at least ``need`` words and at most
    ``room``, those sharing most words with what was dropped first, in the source's
    order; quoted (``quote``: the document's own words, not a summary's)."""
    meant = set(tokens(" ".join(dropped)))
    found = []
    for para in source.split("\n\n"):
        for s in sentences(" ".join(para.split())):
            n = words(s)
            if n >= 5 and ends_sentence(s) and not (quote and '"' in s):
                found.append((-len(meant & set(tokens(s))) / n, len(found), s, n))
    chosen, total = [], 0
    for _, order, s, n in sorted(found):
        if total >= need:
            break
        if total + n + 3 * quote <= room:
            chosen.append((order, s))
            total += n + 3 * quote
    return [f'The text says: "{s}"' if quote else s for _, s in sorted(chosen)]
