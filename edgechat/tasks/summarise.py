"""Summarise documents of any length within the model's context: chunk, map, reduce.

Chunks are cut on paragraph, then sentence, then token boundaries, sized from the
model's real context less the prompt and the room kept for the answer, so no call
overflows. Each chunk gets a partial summary (map). The partial summaries are then
split, in document order, into as many parts as the length has points, and each part
is summarised in its share of the words (reduce): every chunk is represented, which
one call over all of them does not give with a small model. A document that fits is
summarised in one call.

Length is held by the words written, not by asking: generation stops at the first
sentence end past the band's middle, a reply that runs past the band is trimmed to
its last complete sentence (``Summary.trimmed`` says so), and a reply that stops short
is asked to go on. The instructions come before the text, so the engine's cache
reuses them from one call to the next. The document is read and cut into chunks first,
so the time left is known before the first call (tasks/progress.py); the same read
indexes its words, and every partial summary, part and final summary is checked against
what it was written from (tasks/summary_check.py): a sentence its source does not
support is written again or dropped (``Summary.check`` says which and why).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

from edgechat.errors import EdgechatError
from edgechat.llama.contract import ChatEngine
from edgechat.planning.plan import Sampling
from edgechat.tasks import summary_prompts as prompts
from edgechat.tasks.chunking import Chunker, Spool
from edgechat.tasks.grounding import SourceIndex
from edgechat.tasks.progress import Ahead, Meter, Progress
from edgechat.tasks.summary_calls import REPAIRS, Calls, Cancelled
from edgechat.tasks.summary_check import final
from edgechat.tasks.summary_cost import Shape, maps_ahead, note_size, notes_ahead, parts_ahead
from edgechat.tasks.summary_prompts import MAP_WORDS, PARTS, SHAPES, Options
from edgechat.tasks.summary_text import (
    Band,
    Summary,
    as_bullets,
    band,
    join_parts,
    share_out,
    trim_to_sentence,
    whole_ending,
    words,
)

if TYPE_CHECKING:
    from edgechat.llama.reply import Stats

__all__ = ["PARTS", "Cancelled", "Options", "Progress", "Summariser", "Summary", "share_out"]


class Summariser(Calls):
    def __init__(
        self,
        engine: ChatEngine,
        options: Options | None = None,
        sampling: Sampling | None = None,
        progress: Callable[[Progress], None] | None = None,
        now: Callable[[], float] = time.perf_counter,
    ) -> None:
        """``progress`` hears how far the summary is (tasks/progress.py); ``now`` is the
        clock it is timed with (a test's fake engine keeps its own)."""
        self.engine = engine
        self.options = options or Options()
        if self.options.length not in SHAPES or self.options.style not in ("paragraph", "bullets"):
            raise EdgechatError("length is short|medium|long and style paragraph|bullets")
        # A little repetition penalty: small models otherwise loop on long inputs.
        self.base = replace(sampling or Sampling(temperature=0.3), repeat_penalty=1.1)
        self.progress = progress or (lambda p: None)
        self.now = now
        self.chunker = Chunker(engine)
        # A partial summary in a small context is shorter: its room is the next chunk's.
        self.map_words = min(MAP_WORDS, max(24, engine.n_ctx // 16))
        # A base model (no chat template) is asked by plain completion: the text, then
        # "Summary ...:"; a chat template it never learned only makes it echo the prompt.
        self.plain = not engine.info().get("chat_template", True)
        self._cancelled = threading.Event()
        self._overheads: dict[str, int] = {}
        self._start()

    def cancel(self) -> None:
        """Stop the whole summary, not just the call in progress. Safe from any thread:
        the engine forgets a cancel at its next call, so the summariser keeps its own
        (and stays cancelled: make a new one for the next summary)."""
        self._cancelled.set()
        self.engine.cancel()

    def chunks(self, paragraphs: Iterable[str], budget: int) -> Iterator[str]:
        """Paragraphs packed into chunks of at most ``budget`` tokens."""
        return self.chunker.chunks(paragraphs, budget)

    # -- the pipeline ----------------------------------------------------------------------

    def _start(self) -> None:
        self.calls: list[Stats] = []
        self.trimmed = False
        self.meter = Meter(self.progress, self.now)
        self._begin_check()
        self.document = SourceIndex()  # the whole document's words, indexed as it is read
        self._grounds: list[SourceIndex] = []  # what the parts were written from

    def _index(self, text: str) -> list[SourceIndex]:
        """``text`` indexed to check what was written from it (nothing, the check off)."""
        return [SourceIndex(text)] if self.check.on else []

    def run(self, paragraphs: Iterable[str], size_hint: int | None = None) -> Summary:
        """Summarise the document; ``size_hint`` (bytes of text, when known) lets reading
        say how far it is."""
        self._start()
        if self.base.seed != Sampling().seed:
            # A seeded summary repeats exactly only from the same start: evaluating a
            # prompt in other batches (a cache hit) changes the logits in the last bits.
            self.engine.clear_cache()
        high = band(self.options.length).high
        final_budget = self.budget("final", high)
        # Chunks small enough that one of two can be written straight as half the summary,
        # and never one chunk for a document too big for one call (it has at least two).
        map_budget = min(self.budget("map"), self.budget("part", high // 2), final_budget)
        head, spool = self._read(paragraphs, map_budget, final_budget, size_hint)
        with spool, self.document:
            if head is not None:  # the whole document fits one call
                if not head.strip():
                    raise EdgechatError("the document has no text to summarise")
                return self._one_call(head)
            # A document of a few chunks: each chunk is one part of the summary, written
            # from the text itself. More chunks than parts: each gets a partial summary
            # (map) and the partial summaries are shared out among the parts (reduce).
            if len(spool) <= PARTS[self.options.length]:
                return self._parts([text for text, _ in spool], len(spool), 0, source="text")
            notes = self._maps(spool, map_budget)
            return self.reduce(notes, chunks=len(notes))

    def _read(
        self, paragraphs: Iterable[str], budget: int, final_budget: int, size: int | None
    ) -> tuple[str | None, Spool]:
        """The document cut into chunks (kept in a spool), reporting the bytes read as it
        goes; and the whole text too when it fits one call."""
        head: list[str] | None = []
        read = used = 0

        def counted() -> Iterator[str]:
            nonlocal read, used, head
            for para in paragraphs:
                read += len(para.encode("utf-8", "replace")) + 2
                if self.check.on:
                    self.document.add(para)
                self.meter.reading(read, max(size, read) if size else None)
                if head is not None:  # while it may all fit one call, keep it as it is
                    head.append(para)
                    used += self._count(para) + 2
                    if used > final_budget:
                        head = None
                yield para

        spool = Spool()
        try:
            for text, n in self.chunker.sized(counted(), budget):
                spool.add(text, n)
        except BaseException:
            spool.close()
            raise
        self.meter.reading(read, read, final=True)
        return ("\n\n".join(head) if head is not None else None), spool

    def _shape(self, map_budget: int) -> Shape:
        length, overhead = self.options.length, self._overhead
        return Shape(
            overhead("map"), overhead("part"), map_budget, PARTS[length], band(length).target
        )

    def _maps(self, spool: Spool, map_budget: int) -> list[str]:
        """A partial summary of each chunk, costing what is left before each one."""
        n, shape = len(spool), self._shape(map_budget)
        budget = self.budget("part", max(8, band(self.options.length).high // shape.parts))
        notes: list[str] = []
        for i, (chunk, _) in enumerate(spool):
            note = note_size([s.gen_tokens for s in self.calls], self.map_words)
            ahead = maps_ahead(spool.sizes[i:], n, note, shape, budget)
            self.meter.stage("summarising", i, n, "chunks", ahead)
            notes.append(self._map(chunk))
        note = note_size([s.gen_tokens for s in self.calls], self.map_words)
        self.meter.stage("summarising", n, n, "chunks", notes_ahead(n, note, shape, budget))
        return notes

    def _one_call(self, text: str) -> Summary:
        want = band(self.options.length, words(text))
        ahead = Ahead(self._count(text) + self._overhead("final"), prompts.tokens_of(want.target))
        self.meter.stage("writing", 0, 1, "parts", ahead)
        request = self.request("final", text, want.target)
        answer = self._write(request, want, 2, set(), [self.document], "summary", (text, True))
        if self.options.style == "bullets":
            answer = as_bullets(answer)
        self.meter.finished("writing", 1, "parts")
        return self._done(answer, chunks=1, levels=0, want=want)

    def _map(self, text: str, also: Iterable[SourceIndex] = ()) -> str:
        """A partial summary of ``text``, checked against it (and ``also``)."""
        request = self.request("map", text, self.map_words)
        reply, how = self._stream(request, self.map_words * 2 // 3, self.map_words)
        note = trim_to_sentence(reply) if how == "cut" else reply
        self._repairs = REPAIRS
        return self._checked(request, note, [*self._index(text), *also], "map")

    def reduce(self, notes: list[str], chunks: int | None = None, levels: int = 0) -> Summary:
        """One summary of partial summaries, in order, each of them represented.

        The notes are split into as many consecutive parts as the length has points;
        a part too long for one call is condensed first (a further level).
        """
        notes = [n for n in notes if n.strip()]
        if not notes:
            raise EdgechatError("the model wrote nothing for any part of the document")
        groups = ["\n\n".join(g) for g in share_out(notes, PARTS[self.options.length])]
        return self._parts(groups, chunks or len(notes), levels, source="notes")

    def _parts(self, groups: list[str], chunks: int, levels: int, source: str) -> Summary:
        """Each group (chunk text or partial summaries) written as its share of the words."""
        want = band(self.options.length)
        n_parts = len(groups)
        share = Band(max(1, want.low // n_parts), max(8, want.high // n_parts))
        part_budget = self.budget("part", share.high)
        seen: set[str] = set()
        written: list[str] = []
        deepest = levels
        sizes = [self._count(g) for g in groups]
        shape = self._shape(self.budget("map"))
        note = note_size([s.gen_tokens for s in self.calls], self.map_words)
        for j, group in enumerate(groups):
            ahead = parts_ahead(sizes[j:], share.target, shape, part_budget, note)
            self.meter.stage("writing", j, n_parts, "parts", ahead)
            if source == "notes":
                pieces, depth = self._condense(group.split("\n\n"), part_budget)
                group = "\n\n".join(pieces)
                deepest = max(deepest, levels + depth)
            request = self.request("part", group, share.target)
            self._grounds += self._index(group)
            sources = [*self._grounds[-1:], self.document]
            lend = (group, source == "text")  # the document's words are quoted, notes not
            written.append(self._write(request, share, 1, seen, sources, "part", lend))
        self.meter.finished("writing", n_parts, "parts")
        answer = join_parts(written, self.options.style, self.options.length)
        summary = self._done(answer, chunks, deepest + (source == "notes"), want)
        summary.parts = written
        return summary

    def _condense(self, notes: list[str], budget: int) -> tuple[list[str], int]:
        """Notes that fit one call, summarising them in groups as often as it takes."""
        depth = 0
        while self._count("\n\n".join(notes)) + 2 * len(notes) > budget:
            groups = list(self.chunks(notes, self.budget("map")))
            if len(groups) >= len(notes):
                raise EdgechatError(
                    f"a {self.engine.n_ctx}-token context is too small to combine the partial "
                    "summaries; use a larger --ctx"
                )
            notes = [self._map(g, [self.document]) for g in groups]
            depth += 1
        return notes, depth

    def combine(self, summaries: list[str]) -> Summary:
        """One summary of several documents' summaries, each document represented."""
        self._start()
        return self.reduce(summaries, chunks=len(summaries))

    def _done(self, answer: str, chunks: int, levels: int, want: Band) -> Summary:
        # Whatever stopped the model, the summary ends whole: no trailing lead-in ("...
        # as follows:"), no prose sentence left open.
        answer = whole_ending(answer)
        if self.check.on:  # the printed summary, against the document and what it came from
            answer = whole_ending(final(answer, [self.document, *self._grounds], self.check))
        return Summary(
            answer.strip(),
            chunks,
            levels,
            list(self.calls),
            self.now() - self.meter.t0,
            band=want,
            trimmed=self.trimmed,
            check=self.check,
        )
