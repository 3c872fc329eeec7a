"""Cut a document into chunks that fit a model's context: on paragraphs, then sentences,
then tokens, counted with the model's own tokenizer, so no call overflows."""

from __future__ import annotations

import re
import tempfile
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
        return (text for text, _ in self.sized(paragraphs, budget))

    def sized(self, paragraphs: Iterable[str], budget: int) -> Iterator[tuple[str, int]]:
        """The chunks with their sizes in tokens (what progress costs them at)."""
        parts: list[str] = []
        used = 0
        for piece, n in self.pieces(paragraphs, budget):
            if parts and used + n + 2 > budget:
                yield "\n\n".join(parts), used
                parts, used = [], 0
            parts.append(piece)
            used += n + 2
        if parts:
            yield "\n\n".join(parts), used

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


class Spool:
    """Chunks kept for the pass after reading, with their sizes in tokens: in memory up
    to ``IN_MEMORY`` bytes of text, beyond that in an unnamed temporary file (removed on
    close), so a document of any size is never held whole in memory."""

    IN_MEMORY = 16 * 2**20

    def __init__(self) -> None:
        self._file = tempfile.SpooledTemporaryFile(max_size=self.IN_MEMORY)  # noqa: SIM115 (closed by close())
        self._spans: list[tuple[int, int]] = []
        self.sizes: list[int] = []

    def add(self, text: str, tokens: int) -> None:
        data = text.encode("utf-8", "surrogatepass")
        self._file.seek(0, 2)
        self._spans.append((self._file.tell(), len(data)))
        self._file.write(data)
        self.sizes.append(tokens)

    def __len__(self) -> int:
        return len(self.sizes)

    def __iter__(self) -> Iterator[tuple[str, int]]:
        for (start, n), tokens in zip(self._spans, self.sizes, strict=True):
            self._file.seek(start)
            yield self._file.read(n).decode("utf-8", "surrogatepass"), tokens

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
