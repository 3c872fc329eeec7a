"""What a source says, to check a summary against it (tasks/summary_check.py).

The source's words are kept as normalised tokens (Unicode NFKC, casefolded, one spelling
of the apostrophe; numbers without thousands separators or leading zeros; each CJK
character a token of its own), in order, as an index built while the document is read:

- a quotation is found as a run of tokens: the token ids are fixed-width bytes and the
  run is one ``bytes.find`` (C speed, over 16 MB for a 20 MB text), never a regex per
  claim over the text;
- a number or a word is one token (a dictionary look-up);
- an acronym is found among the initials of the source's runs of capitalised words
  ("General Public License" gives GPL).

Memory: four bytes a token of the source (a 20 MB text: about 16 MB), in memory up to
``SPILL`` bytes and beyond that in an unnamed temporary file, read through mmap.

Libraries weighed: rapidfuzz (edit-distance ratios) would accept exactly what must fail
(GPLv2 for GPLv3, "distribute" for "redistribute"); pyahocorasick finds many patterns in
one pass over a text, but each check would pass over the whole document again, where
this index is built once, in the read that chunking already does.
"""

from __future__ import annotations

import functools
import mmap
import re
import tempfile
import unicodedata
from array import array
from collections.abc import Iterable

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # no spaces between words
_TOKEN = re.compile(rf"[{_CJK}]|\d+(?:[.,]\d+)*|[^\W\d_{_CJK}]+(?:'[^\W\d_{_CJK}]+)*")
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "ʼ": "'", "ʹ": "'", "′": "'"})
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+")
_CONNECTORS = "of|for|and|the|on|in|de|du|des|la|le|von|van|der|&"
# How numbers are written out, so "7" in a summary is supported by "seven" in the text.
_WORDS = "zero one two three four five six seven eight nine ten eleven twelve thirteen "
_WORDS += "fourteen fifteen sixteen seventeen eighteen nineteen twenty"
_ORDINALS = "zeroth first second third fourth fifth sixth seventh eighth ninth tenth eleventh "
_ORDINALS += "twelfth"
NUMBER_WORDS = {
    str(n): (word, *_ORDINALS.split()[n : n + 1]) for n, word in enumerate(_WORDS.split())
}
NUMBER_WORDS.update({"30": ("thirty",), "40": ("forty",), "50": ("fifty",), "100": ("hundred",)})
NUMBER_WORDS.update({"1000": ("thousand",), "1000000": ("million",)})


def normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).casefold()


def number(token: str) -> str:
    """One spelling of a number: 1,000 -> 1000, 06 -> 6, 3.0 -> 3 (3.10 stays 3.10)."""
    if _THOUSANDS.fullmatch(token):
        token = token.replace(",", "")
    whole, dot, rest = token.partition(".")
    if dot and rest.strip("0") == "" and "," not in token:
        token = whole
    if token.isdigit() and len(token) < 40:
        return str(int(token))  # Unicode digits too (٣ -> 3)
    return token


def tokens(text: str) -> list[str]:
    """``text`` as normalised tokens: words, numbers, CJK characters."""
    return [number(t) if t[0].isdigit() else t for t in _TOKEN.findall(normalise(text))]


def plain(word: str) -> str:
    """``word`` without accents (Malmö -> malmo)."""
    decomposed = unicodedata.normalize("NFKD", word)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def variants(word: str) -> list[str]:
    """The forms a name takes in running text: possessive, plural."""
    out = [word]
    for end in ("'s", "'", "es", "s"):
        if word.endswith(end) and len(word) > len(end) + 1:
            out.append(word[: -len(end)])
    return out


@functools.cache
def _capitalised_runs() -> re.Pattern:
    """Runs of two or more capitalised words (built once, when first needed: the class of
    capital letters is made from Unicode's own table)."""
    upper = [c for c in map(chr, range(0x10000)) if c.isupper()]
    spans, start, prev = [], None, None
    for c in upper:  # consecutive code points as ranges, to keep the class short
        if start is None or ord(c) != ord(prev) + 1:
            if start is not None:
                spans.append((start, prev))
            start = c
        prev = c
    spans.append((start, prev))
    cls = "".join(re.escape(a) if a == b else f"{re.escape(a)}-{re.escape(b)}" for a, b in spans)
    word = rf"[{cls}][\w'’-]*"
    return re.compile(rf"{word}(?:\s+(?:(?:{_CONNECTORS})\s+)*{word})+")


def acronyms(text: str) -> set[str]:
    """The initials of every run of capitalised words in ``text`` (and of its parts):
    "the GNU General Public License" gives ggpl, gpl, pl ... (casefolded)."""
    found: set[str] = set()
    for m in _capitalised_runs().finditer(text):
        words = m.group(0).split()
        caps = [w for w in words if w[0].isupper()][:8]
        for i in range(len(caps)):
            for j in range(i + 2, len(caps) + 1):
                found.add(normalise("".join(w[0] for w in caps[i:j])))
        if len(caps) < len(words) <= 12:  # Bank of England: boe as well as be
            found.add(normalise("".join(w[0] for w in words if w != "&")))
    return found


class SourceIndex:
    """The tokens of a source, in order, added a paragraph at a time."""

    SPILL = 16 * 2**20

    def __init__(self, text: str = "") -> None:
        self._ids: dict[str, int] = {}
        self._seq = bytearray()
        self._file = None
        self._map: mmap.mmap | None = None
        self._acronyms: set[str] = set()
        self._plain: set[str] | None = None
        self.n_tokens = 0
        if text:
            self.add(text)

    def add(self, text: str) -> None:
        ids = self._ids
        run = array("I", [ids.setdefault(t, len(ids)) for t in tokens(text)])
        self.n_tokens += len(run)
        data = run.tobytes()
        if self._file is None and len(self._seq) + len(data) > self.SPILL:
            self._file = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
            self._file.write(self._seq)
            self._seq = bytearray()
        if self._file is not None:
            self._file.seek(0, 2)
            self._file.write(data)
        else:
            self._seq += data
        self._acronyms |= acronyms(text)
        self._plain = None

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> SourceIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _haystack(self):
        if self._file is None:
            return self._seq
        self._file.flush()
        size = self._file.seek(0, 2)
        if self._map is None or len(self._map) != size:
            if self._map is not None:
                self._map.close()
            self._map = mmap.mmap(self._file.fileno(), size, access=mmap.ACCESS_READ)
        return self._map

    # -- questions ---------------------------------------------------------------------

    def has(self, token: str) -> bool:
        return token in self._ids

    def has_run(self, run: list[str]) -> bool:
        """Whether the normalised tokens ``run`` occur in this order, one after another."""
        ids = [self._ids.get(t) for t in run]
        if not run or None in ids:
            return False
        pattern = array("I", ids).tobytes()
        hay = self._haystack()
        at = hay.find(pattern)
        while at != -1 and at % 4:  # found across two token ids: look on
            at = hay.find(pattern, at + 1)
        return at != -1

    def has_number(self, n: str) -> bool:
        return n in self._ids or any(w in self._ids for w in NUMBER_WORDS.get(n, ()))

    def has_word(self, word: str) -> bool:
        """A word of a name, or a clear variant of it: another case, a possessive or
        plural, without accents, or an acronym of the source's capitalised words."""
        if any(v in self._ids for v in variants(word)) or word in self._acronyms:
            return True
        if self._plain is None:
            self._plain = {plain(w) for w in self._ids}
        return any(plain(v) in self._plain for v in variants(word))


def supported(check, sources: Iterable[SourceIndex]) -> bool:
    """``check(index)`` holds for one of ``sources``."""
    return any(check(s) for s in sources)
