"""Cut the user's text into a calibration part and a held-out part, deterministically.

The text is cut at line ends into stretches of about one chunk (n_ctx tokens) each;
every third stretch is held out for scoring (the last, when there are fewer than
three), the rest calibrates. Interleaving keeps both parts alike when the text is
several documents of different kinds one after the other, and no token is in both:
a quant is never scored on the text its importance matrix came from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edgechat.errors import InputError

EVERY = 3  # one stretch in EVERY is held out


@dataclass(frozen=True)
class Split:
    calibration: str
    held_out: str
    stretches: int
    held: tuple[int, ...]  # indexes of the held-out stretches
    tokens: int  # of the whole text


def needed_tokens(n_ctx: int) -> int:
    """The shortest text that gives one whole chunk to each part, with room for the cuts."""
    return 2 * n_ctx + n_ctx // 2


def _cut(text: str, at: int) -> int:
    """The position of the first line end at or after ``at`` (else a space, else ``at``)."""
    if at >= len(text):
        return len(text)
    for mark in ("\n", " "):
        end = text.find(mark, at)
        if end != -1 and end - at < max(200, (len(text) - at) // 2):
            return end + 1
    return at


def stretches(text: str, size: int) -> list[str]:
    """``text`` in pieces of at least ``size`` characters, cut at line ends."""
    out, start = [], 0
    while start < len(text):
        end = _cut(text, start + size)
        out.append(text[start:end])
        start = end
    if len(out) > 1 and len(out[-1]) < size // 2:  # a short tail joins the piece before
        out[-2:] = [out[-2] + out[-1]]
    return out


def split(text: str, count: Callable[[str], int], n_ctx: int, name: str = "the text") -> Split:
    """The two parts of ``text``; ``count`` gives a text's length in the model's tokens.
    InputError (one line) when either part would hold less than one chunk."""
    total = count(text)
    need = needed_tokens(n_ctx)
    if total < need:
        raise InputError(
            f"{name} is {total} tokens; at least {need} are needed (a chunk of {n_ctx} to "
            f"calibrate and another to score, kept apart): give more text or a smaller --ctx"
        )
    chars_per_token = len(text) / total
    pieces = stretches(text, max(1, int(n_ctx * 1.1 * chars_per_token)))
    held = tuple(i for i in range(len(pieces)) if i % EVERY == EVERY - 1) or (len(pieces) - 1,)
    held_out = "".join(pieces[i] for i in held)
    calibration = "".join(p for i, p in enumerate(pieces) if i not in held)
    for part, words in ((calibration, "calibration"), (held_out, "held-out")):
        if count(part) < n_ctx:
            raise InputError(
                f"{name} is {total} tokens, too short to give the {words} part one chunk of "
                f"{n_ctx}: give more text or a smaller --ctx"
            )
    return Split(calibration, held_out, len(pieces), held, total)
