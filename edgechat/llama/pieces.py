"""From sampled tokens to the text a reader sees: each token's bytes, decoded as UTF-8
across token boundaries, and stop strings cut across token boundaries too.

Shared by the single-sequence loop (engine.py) and the batch loop (batch.py), so both
turn tokens into text the same way.
"""

from __future__ import annotations

import codecs
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgechat.llama.vocab import Vocab


class Detokenizer:
    """One reply's text, token by token. A character split over two tokens comes out
    whole with the second; ``flush`` gives what an unfinished one leaves."""

    def __init__(self, vocab: Vocab) -> None:
        self._piece = vocab.piece
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def __call__(self, token: int) -> str:
        return self._utf8.decode(self._piece(token))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


class StopFilter:
    """Cut the reply at the first stop string, across token boundaries: text that may
    be the start of a stop string is held back until it is known not to be."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        """(text safe to send now, whether a stop string was reached)."""
        if not self.stops:
            return piece, False
        self.pending += piece
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out = self.pending[: min(hits)]
            self.pending = ""
            return out, True
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(out) :]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out
