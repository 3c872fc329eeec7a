"""The text of a summary: word bands, whole sentences, repeats removed, shape kept.

A small model's reply is cut when it meets a token cap, loops, and ignores "at most N
words". These helpers judge and tidy its text without rewriting it: a cut reply is
trimmed back to its last complete sentence, a repeated line or sentence is dropped,
and the paragraphs, lists and headings the model wrote stay as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgechat.llama.reply import Stats
    from edgechat.tasks.summary_check import Check

# Word bands: where a summary of each length lands (fewer when the document is short).
BANDS = {
    "short": (40, 90),
    "medium": (90, 180),
    "long": (180, 350),
}
_WORD = re.compile(r"[^\W_]+(?:['’.-][^\W_]+)*")
_BULLET = re.compile(r"^\s*(?:[-*•+]|\d+[.)])\s+")
_HEADING = re.compile(r"^\s*#{1,6}\s+")
# A sentence ends at . ! ? (and closing quotes or brackets) before a space or the end.
_END = re.compile(r"[.!?。][\"'”’)\]]*(?=\s|$)")
_LAST = re.compile(r"[.!?。][\"'”’)\]]*$")  # the text's very end is a sentence's
_ABBREV = re.compile(r"\b(?:e\.g|i\.e|etc|vs|Mr|Mrs|Dr|No|Inc|Ltd|St)\.$", re.IGNORECASE)


@dataclass(frozen=True)
class Band:
    low: int
    high: int

    @property
    def target(self) -> int:
        return (self.low + self.high) // 2

    def holds(self, n: int) -> bool:
        return self.low <= n <= self.high


def band(length: str, document_words: int | None = None) -> Band:
    """The word band for ``length``; a short document gets a summary shorter than itself."""
    low, high = BANDS[length]
    if document_words is not None and document_words < 2 * high:
        high = max(30, min(high, document_words // 2))
        low = min(low, high // 2)
    return Band(low, high)


def words(text: str) -> int:
    """Words as a reader counts them: list markers, '#' and punctuation are not words."""
    return len(_WORD.findall(text))


def ends_sentence(text: str) -> bool:
    """Does ``text`` end with a complete sentence (or a heading)? A list item with no full
    stop is not enough: small models hard-wrap lines, so a line break may fall mid-item."""
    stripped = text.rstrip()
    if not stripped:
        return False
    if text[len(stripped) :].count("\n") and _HEADING.match(stripped.rsplit("\n", 1)[-1]):
        return True
    return bool(_LAST.search(stripped)) and not _ABBREV.search(stripped)


def _line_complete(line: str, after: str = "") -> bool:
    """A line the model finished and moved on from: one ending a sentence, a heading, or a
    list item followed by the next item (``after``); a lead-in (ends with ':') is not."""
    line = line.rstrip()
    if not line or line.endswith(":"):
        return False
    if _HEADING.match(line) or _LAST.search(line):
        return True
    return bool(_BULLET.match(line) and (_BULLET.match(after) or _HEADING.match(after)))


def trim_to_sentence(text: str) -> str:
    """``text`` without a trailing unfinished sentence (it was cut by a token cap)."""
    text = text.rstrip()
    if ends_sentence(text):
        return text
    cut = 0
    for m in _END.finditer(text):
        line = text[text.rfind("\n", 0, m.start()) + 1 : m.end()]
        if not _ABBREV.search(text[: m.end()]) and not _BULLET.match(line + " "):
            cut = m.end()
    # The last whole line: a list item counts once the next item has begun.
    lines = text.split("\n")
    end = len(text) - len(lines[-1]) - 1  # where the unfinished last line begins
    after = lines[-1]
    for line in reversed(lines[:-1]):
        if end <= cut:
            break
        if line.strip() and _line_complete(line, after.lstrip()):
            cut = end
            break
        after = line if line.strip() else after
        end -= len(line) + 1
    return _drop_lead_in(text[:cut])


def whole_ending(text: str) -> str:
    """``text`` ending whole: trailing lead-in lines dropped, and a last prose line that
    stops mid-sentence trimmed back (a list item or heading may end without a stop)."""
    text = _drop_lead_in(text)
    last = text.rsplit("\n", 1)[-1]
    if text and not ends_sentence(text) and not (_BULLET.match(last) or _HEADING.match(last)):
        return trim_to_sentence(text) or text
    return text


def within(text: str, high: int) -> str:
    """``text`` with whole sentences taken off its end until it has at most ``high``
    words (never its only sentence): a sentence written again may be longer."""
    while words(text) > high:
        lines = text.rstrip().split("\n")
        marker = _BULLET.match(lines[-1]) or _HEADING.match(lines[-1])
        prefix = marker.group(0) if marker else ""
        body = sentences(lines[-1][len(prefix) :])
        if len(lines) == 1 and len(body) <= 1:
            break
        lines[-1] = prefix + " ".join(body[:-1]) if len(body) > 1 else ""
        text = "\n".join(lines).rstrip()
    return text


def _drop_lead_in(text: str) -> str:
    """Without what announces what was cut away ("... as follows:"): the last sentence
    of a line that ends so, or the whole line when it has no other."""
    lines = text.rstrip().splitlines()
    while lines and (not lines[-1].strip() or lines[-1].rstrip().endswith(":")):
        marker = _BULLET.match(lines[-1])
        prefix = marker.group(0) if marker else ""
        said = sentences(lines[-1][len(prefix) :])
        if len(said) > 1:
            lines[-1] = prefix + " ".join(said[:-1])
        else:
            lines.pop()
    return "\n".join(lines).rstrip()


def sentences(text: str) -> list[str]:
    """``text`` cut after each sentence end, closing quotes and brackets kept with it."""
    out, start = [], 0
    for m in _END.finditer(text):
        out.append(text[start : m.end()].strip())
        start = m.end()
    out.append(text[start:].strip())
    return [s for s in out if s]


def key(text: str) -> str:
    """What a sentence says, for telling a repeat: its words, lower case, no marker."""
    return re.sub(r"\W+", " ", _BULLET.sub("", text)).strip().lower()


def _grams(k: str) -> set[str]:
    words = k.split()
    return {"\x1f" + " ".join(words[i : i + 4]) for i in range(len(words) - 3)}


def repeats(seen: set[str], text: str) -> bool:
    """Whether sentence ``text`` says again what ``seen`` holds: the same words, or most
    of its word 4-grams already used ("It is often cited as the most iconic speech ..."
    then "The Gettysburg Address is often cited as the most iconic speech ...")."""
    k = key(text)
    if k in seen:
        return True
    grams = _grams(k)
    return len(grams) >= 4 and len(grams & seen) >= 0.6 * len(grams)


def said(text: str) -> set[str]:
    """What ``seen`` holds once sentence ``text`` is used (``remember``)."""
    k = key(text)
    return {k} | _grams(k)


def remember(seen: set[str], text: str) -> None:
    """``text`` used: a later sentence repeating it is dropped (``repeats``)."""
    seen |= said(text)


_FILLER = re.compile(
    r"^\W*(?:sure|certainly|of course|okay|ok|i'm glad|i am glad|i'd be happy|happy to)\b"
    r"[^.!?\n]*[.!?:]\s*"
    r"|^\W*(?:here is|here's|here are|below is|this is)\b[^.!?\n]*\bsummar[^.!?\n]*[.!?:]\s*"
    r"|^\W*summary\W*\n",
    re.IGNORECASE,
)


def tidy(text: str, seen: set[str] | None = None) -> str:
    """Repeats removed, the model's layout kept: paragraphs, lists and headings stay.

    A line, or a sentence within a line, that says again what was said is dropped:
    small models loop, and a repeated point says nothing new. ``seen`` carries the
    sentences already used across several pieces of one summary.
    """
    seen = set() if seen is None else seen
    out: list[str] = []
    text = text.strip()
    while (m := _FILLER.match(text)) and m.end() < len(text):
        text = text[m.end() :].lstrip()  # "Here is a summary ...:" says nothing
    for line in _unwrapped(text.splitlines()):
        if not line.strip():
            if out and out[-1] != "":
                out.append("")
            continue
        if _HEADING.match(line):
            if key(line) not in seen:
                seen.add(key(line))
                out.append(line.rstrip())
            continue
        marker = _BULLET.match(line)
        prefix = marker.group(0) if marker else ""
        kept = []
        for s in sentences(line[len(prefix) :]):
            if key(s) and not repeats(seen, s):
                remember(seen, s)
                kept.append(s)
        if kept:
            out.append(prefix + " ".join(kept))
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out)


def _unwrapped(lines: list[str]) -> list[str]:
    """Hard-wrapped lines joined back: a line break inside a sentence is not layout."""
    out: list[str] = []
    for line in lines:
        prev = out[-1] if out else ""
        continues = (
            line.strip()
            and prev.strip()
            and not _HEADING.match(prev)
            and not _HEADING.match(line)
            and not _BULLET.match(line)
            and not prev.rstrip().endswith((":", "**"))
            and not _LAST.search(prev.rstrip())
        )
        if continues:
            out[-1] = f"{prev.rstrip()} {line.strip()}"
        else:
            out.append(line)
    return out


def as_bullets(text: str) -> str:
    """A list, as asked, whatever the model wrote: every line is a "- " item or a heading.

    A small model asked for bullets may number them, star them, nest them or write prose;
    the words stay, the shape is the one promised. Items of another list marker or depth
    become "- " items; in a mostly listed reply a prose line is one item, otherwise each
    prose sentence is.
    """
    lines = [ln for ln in text.splitlines() if ln.strip()]
    listed = sum(bool(_BULLET.match(ln)) for ln in lines) >= max(1, len(lines) // 2)
    out = []
    for ln in lines:
        if _HEADING.match(ln):
            out.append(ln.strip())
        elif marker := _BULLET.match(ln + " "):  # a bare marker is an empty item
            item = ln[marker.end() :].strip()
            out.extend([f"- {item}"] if item else [])
        elif listed:
            out.append(f"- {ln.strip()}")
        else:
            out.extend(f"- {s}" for s in sentences(ln))
    return "\n".join(out)


def join_parts(parts: Iterable[str], style: str, length: str) -> str:
    """Part summaries, in document order, as one summary of the asked shape.

    Prose parts run on as paragraphs (two parts a paragraph for a long summary); a part
    the model wrote as a list or with a heading stays a block of its own, as written.
    """
    parts = [p.strip() for p in parts if p.strip()]
    if style == "bullets":
        return "\n".join(as_bullets(p) for p in parts)
    per_paragraph = 2 if length == "long" else len(parts) or 1
    blocks: list[str] = []
    run: list[str] = []
    for p in parts:
        shaped = "\n" in p or _HEADING.match(p) or _BULLET.match(p)
        if run and (shaped or len(run) >= per_paragraph):
            blocks.append(" ".join(run))
            run = []
        if shaped:
            blocks.append(p)
        else:
            run.append(p)
    if run:
        blocks.append(" ".join(run))
    return "\n\n".join(blocks)


@dataclass
class Summary:
    text: str
    chunks: int
    levels: int  # reduce levels above the map step (0: one pass)
    calls: list[Stats] = field(default_factory=list)
    seconds: float = 0.0
    band: Band = field(default_factory=lambda: band("medium"))
    trimmed: bool = False  # a reply was cut by its cap and trimmed to whole sentences
    parts: list[str] = field(default_factory=list)  # the part summaries, in document order
    check: Check | None = None  # what the check against the source found and did

    @property
    def words(self) -> int:
        return words(self.text)

    @property
    def in_band(self) -> bool:
        return self.band.holds(self.words)

    @property
    def tokens_in(self) -> int:
        return sum(s.prompt_tokens for s in self.calls)

    @property
    def tokens_out(self) -> int:
        return sum(s.gen_tokens for s in self.calls)

    @property
    def engine_seconds(self) -> float:
        """Time llama.cpp spent evaluating prompts and generating, summed over calls."""
        return sum(s.prompt_s + s.gen_s for s in self.calls)


def share_out(items: list[str], n: int) -> list[list[str]]:
    """``items`` in order, in at most ``n`` consecutive groups of near-equal size: each item
    lands in exactly one group, so every part of the document reaches the summary."""
    n = max(1, min(n, len(items)))
    size, extra = divmod(len(items), n)
    groups, start = [], 0
    for k in range(n):
        end = start + size + (k < extra)
        groups.append(items[start:end])
        start = end
    return groups
