"""Summarise documents of any length within the model's context: chunk, map, reduce.

Chunks are cut on paragraph, then sentence, then token boundaries, sized from the
model's real context less the prompt and the room kept for the answer, so no call
overflows. Each chunk gets a partial summary (map); partial summaries are combined
in groups that fit, level after level, until one remains (reduce). A document that
fits is summarised in one call. The instructions come before the text, so the
engine's cache reuses them from one chunk to the next.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

from edgechat.errors import EdgechatError
from edgechat.llama.engine import Engine, Stats
from edgechat.planning.plan import Sampling

SYSTEM = (
    "You summarise documents faithfully. Keep the main points, names and figures; "
    "add nothing that is not in the text."
)
LENGTHS = {
    "short": (80, "in two or three sentences"),
    "medium": (200, "in one paragraph"),
    "long": (400, "in a few paragraphs"),
}
MAP_TOKENS = 160  # a partial summary of one chunk
_SENTENCE = re.compile(r"(?<=[.!?。])\s+")
_BULLET = re.compile(r"^\s*(?:[-*•+]|\d+[.)])\s+")


class Cancelled(EdgechatError):
    """The summary was stopped (``Summariser.cancel``)."""


@dataclass(frozen=True)
class Options:
    length: str = "medium"
    style: str = "paragraph"  # paragraph | bullets
    focus: str | None = None


@dataclass
class Progress:
    stage: str  # map | reduce | final
    done: int
    total: int | None  # None while the input is still being read
    eta_s: float | None


@dataclass
class Summary:
    text: str
    chunks: int
    levels: int  # reduce levels above the map step (0: one pass)
    calls: list[Stats] = field(default_factory=list)
    seconds: float = 0.0

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


def _instruction(options: Options, part: str) -> str:
    words, shape = LENGTHS[options.length]
    focus = f" Focus on what matters to this reader: {options.focus}." if options.focus else ""
    if part == "map":
        return (
            f"Summarise this part of a longer document in at most {MAP_TOKENS // 2} words, "
            f"keeping its key facts.{focus}"
        )
    style = (
        " Write it as a bulleted list, one point per line, each starting with '- '."
        if options.style == "bullets"
        else " Write it as prose, not a list."
    )
    source = (
        "these partial summaries of one long document" if part == "reduce" else "the following text"
    )
    return f"Summarise {source} {shape}, at most about {words} words.{style}{focus}"


def _unique(items: Iterable[str]) -> list[str]:
    """Drop repeats: small models loop, and a repeated point says nothing new."""
    seen: set[str] = set()
    kept = []
    for item in items:
        key = re.sub(r"\W+", " ", item).strip().lower()
        if key and key not in seen:
            seen.add(key)
            kept.append(item)
    return kept


def apply_style(text: str, style: str) -> str:
    """Make the answer the shape that was asked for, whatever a small model did."""
    text = text.strip()
    lines = _unique(ln.strip() for ln in text.splitlines() if ln.strip())
    if style == "bullets":
        if sum(bool(_BULLET.match(ln)) for ln in lines) >= max(1, len(lines) // 2):
            return "\n".join("- " + _BULLET.sub("", ln) for ln in lines)
        sentences = _unique(s.strip() for s in _SENTENCE.split(" ".join(lines)) if s.strip())
        return "\n".join(f"- {s}" for s in sentences)
    prose = " ".join(_BULLET.sub("", ln) for ln in lines)
    return " ".join(_unique(s.strip() for s in _SENTENCE.split(prose) if s.strip()))


class Summariser:
    def __init__(
        self,
        engine: Engine,
        options: Options | None = None,
        sampling: Sampling | None = None,
        progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.engine = engine
        self.options = options or Options()
        if self.options.length not in LENGTHS or self.options.style not in ("paragraph", "bullets"):
            raise EdgechatError("length is short|medium|long and style paragraph|bullets")
        # A little repetition penalty: small models otherwise loop on long inputs.
        base = replace(sampling or Sampling(temperature=0.3), repeat_penalty=1.1)
        self.final_sampling = replace(base, max_tokens=LENGTHS[self.options.length][0] * 2)
        # Partial summaries shrink with the context, so combining them always converges.
        self.map_sampling = replace(base, max_tokens=min(MAP_TOKENS, engine.n_ctx // 8))
        self.progress = progress or (lambda p: None)
        self.calls: list[Stats] = []
        self._cancelled = threading.Event()
        self._t0 = 0.0

    # -- sizes ---------------------------------------------------------------------------

    def _messages(self, part: str, text: str) -> list[dict]:
        return [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"{_instruction(self.options, part)}\n\n{text}"},
        ]

    def budget(self, part: str, sampling: Sampling) -> int:
        """Tokens of document text one call can take for ``part``."""
        overhead = len(self.engine.prompt_tokens(self._messages(part, "")))
        reserve = max(1, min(sampling.max_tokens, self.engine.n_ctx // 4))  # as Engine.chat
        room = self.engine.n_ctx - overhead - reserve - 16  # joins and template slack
        if room < 64:
            raise EdgechatError(
                f"a {self.engine.n_ctx}-token context leaves no room for text to summarise; "
                "use a larger --ctx"
            )
        return room

    def _count(self, text: str) -> int:
        return len(self.engine.tokenize(text, add_special=False))

    def chunks(self, paragraphs: Iterable[str], budget: int) -> Iterator[str]:
        """Paragraphs packed into chunks of at most ``budget`` tokens."""
        parts: list[str] = []
        used = 0
        for piece, n in self._pieces(paragraphs, budget):
            if parts and used + n + 2 > budget:
                yield "\n\n".join(parts)
                parts, used = [], 0
            parts.append(piece)
            used += n + 2
        if parts:
            yield "\n\n".join(parts)

    def _pieces(self, paragraphs: Iterable[str], budget: int) -> Iterator[tuple[str, int]]:
        """Each paragraph with its token count; one too big is cut at sentences, then tokens."""
        for para in paragraphs:
            n = self._count(para)
            if n <= budget:
                yield para, n
                continue
            for sentence in _SENTENCE.split(para):
                m = self._count(sentence)
                if m <= budget:
                    yield sentence, m
                    continue
                tokens = self.engine.tokenize(sentence, add_special=False)
                step = budget - 8  # detokenized slices can re-tokenize a little longer
                for i in range(0, len(tokens), step):
                    piece = self.engine.detokenize(tokens[i : i + step])
                    yield piece, self._count(piece)

    # -- calls ---------------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop the whole summary, not just the call in progress. Safe from any thread:
        the engine forgets a cancel at its next call, so the summariser keeps its own
        (and stays cancelled: make a new one for the next summary)."""
        self._cancelled.set()
        self.engine.cancel()

    def _call(self, part: str, text: str, sampling: Sampling) -> str:
        if self._cancelled.is_set():
            raise Cancelled("the summary was stopped")
        reply = self.engine.chat(self._messages(part, text), sampling, drop_oldest=False)
        reply.collect()
        if reply.stats:
            self.calls.append(reply.stats)
        if self._cancelled.is_set():
            raise Cancelled("the summary was stopped")
        return reply.text.strip()

    def _eta(self, done: int, total: int | None) -> float | None:
        if not done or not total:
            return None
        return (time.perf_counter() - self._t0) / done * (total - done)

    def run(self, paragraphs: Iterable[str], size_hint: int | None = None) -> Summary:
        """Summarise the document; ``size_hint`` (bytes) lets progress estimate a total."""
        self._t0 = time.perf_counter()
        self.calls = []
        final_budget = self.budget("final", self.final_sampling)
        map_budget = self.budget("map", self.map_sampling)
        stream = iter(paragraphs)
        # Read up to one final-sized chunk: if the whole document fits, one call does it.
        head: list[str] = []
        used = 0
        for para in stream:
            head.append(para)
            used += self._count(para) + 2
            if used > final_budget:
                break
        else:
            text = "\n\n".join(head)
            if not text.strip():
                raise EdgechatError("the document has no text to summarise")
            self.progress(Progress("final", 0, 1, None))
            answer = self._call("final", text, self.final_sampling)
            self.progress(Progress("final", 1, 1, 0.0))
            return self._done(answer, chunks=1, levels=0)

        def everything() -> Iterator[str]:
            yield from head
            yield from stream

        notes: list[str] = []
        read_bytes = 0
        for i, chunk in enumerate(self.chunks(everything(), map_budget), 1):
            read_bytes += len(chunk.encode("utf-8", "replace"))
            total = None
            if size_hint:
                total = max(i, round(i * size_hint / max(read_bytes, 1)))
            notes.append(self._call("map", chunk, self.map_sampling))
            self.progress(Progress("map", i, total, self._eta(i, total)))
        chunks = len(notes)
        self.progress(Progress("map", chunks, chunks, 0.0))  # the exact total, now known
        levels = 0
        while True:
            joined = "\n\n".join(n for n in notes if n)
            if self._count(joined) + 2 * len(notes) <= final_budget:
                self.progress(Progress("final", 0, 1, None))
                answer = self._call("reduce", joined, self.final_sampling)
                return self._done(answer, chunks=chunks, levels=levels + 1)
            groups = list(self.chunks(notes, map_budget))
            if len(groups) >= len(notes):
                raise EdgechatError(
                    f"a {self.engine.n_ctx}-token context is too small to combine the partial "
                    "summaries; use a larger --ctx"
                )
            levels += 1
            notes = []
            for j, group in enumerate(groups, 1):
                notes.append(self._call("map", group, self.map_sampling))
                self.progress(Progress("reduce", j, len(groups), self._eta(j, len(groups))))

    def _done(self, answer: str, chunks: int, levels: int) -> Summary:
        text = apply_style(answer, self.options.style) if answer else ""
        return Summary(text, chunks, levels, list(self.calls), time.perf_counter() - self._t0)
