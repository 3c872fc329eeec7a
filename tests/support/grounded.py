"""What a printed summary may say about its text (issue 33), read plainly, apart from the
check's own code: every quotation's words occur in the text in that order, every number
in it occurs there (as digits, or as a number word the check accepts)."""

from __future__ import annotations

import re

from edgechat.tasks.grounding import NUMBER_WORDS

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_QUOTED = re.compile(r'"([^"\n]+)"|“([^”\n]+)”|«([^»\n]+)»')


def _words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.casefold()))


def _number(n: str) -> str:
    n = re.sub(r"(?<=\d),(?=\d{3}\b)", "", n)
    return str(int(n)) if n.isdigit() else n


def unsupported(summary: str, text: str) -> list[str]:
    """The quotations and numbers of ``summary`` that ``text`` does not hold."""
    source = f" {_words(text)} "
    wrong = []
    for m in _QUOTED.finditer(summary):
        quoted = next(g for g in m.groups() if g)
        parts = [_words(p) for p in re.split(r"\.\.\.|…", quoted)]
        wrong += [quoted for p in parts if p and f" {p} " not in source][:1]
    numbers = {_number(n) for n in _NUMBER.findall(text)}
    for n in map(_number, _NUMBER.findall(summary)):
        if n not in numbers and not any(f" {w} " in source for w in NUMBER_WORDS.get(n, ())):
            wrong.append(n)
    return wrong
