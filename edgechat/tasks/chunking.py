"""Cut a document into chunks that fit a model's context: on paragraphs, then sentences,
then tokens, counted with the model's own tokenizer, so no call overflows."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from edgechat.llama.contract import ChatEngine

_SENTENCE = re.compile(r"(?<=[.!?。])\s+")


class Chunker:
    def __init__(self, engine: ChatEngine) -> None:
        self.engine = engine

    def count(self, text: str) -> int:
        return len(self.engine.tokenize(text, add_special=False))

    def chunks(self, paragraphs: Iterable[str], budget: int) -> Iterator[str]:
        """Paragraphs packed into chunks of at most ``budget`` tokens."""
        parts: list[str] = []
        used = 0
        for piece, n in self.pieces(paragraphs, budget):
            if parts and used + n + 2 > budget:
                yield "\n\n".join(parts)
                parts, used = [], 0
            parts.append(piece)
            used += n + 2
        if parts:
            yield "\n\n".join(parts)

    def pieces(self, paragraphs: Iterable[str], budget: int) -> Iterator[tuple[str, int]]:
        """Each paragraph with its token count; one too big is cut at sentences, then tokens."""
        for para in paragraphs:
            n = self.count(para)
            if n <= budget:
                yield para, n
                continue
            for sentence in _SENTENCE.split(para):
                m = self.count(sentence)
                if m <= budget:
                    yield sentence, m
                    continue
                tokens = self.engine.tokenize(sentence, add_special=False)
                step = budget - 8  # detokenized slices can re-tokenize a little longer
                for i in range(0, len(tokens), step):
                    piece = self.engine.detokenize(tokens[i : i + step])
                    yield piece, self.count(piece)
