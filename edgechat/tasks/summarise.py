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
so the time left is known before the first call (tasks/progress.py).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace

from edgechat.errors import ContextOverflow, EdgechatError
from edgechat.llama.contract import ChatEngine, reply_reserve
from edgechat.llama.reply import Stats
from edgechat.planning.plan import Sampling
from edgechat.tasks import summary_prompts as prompts
from edgechat.tasks.chunking import Chunker, Spool
from edgechat.tasks.progress import Ahead, Meter, Progress
from edgechat.tasks.summary_cost import Shape, maps_ahead, note_size, notes_ahead, parts_ahead
from edgechat.tasks.summary_prompts import MAP_WORDS, MORE, PARTS, SHAPES, SYSTEM, Options
from edgechat.tasks.summary_text import (
    Band,
    Summary,
    as_bullets,
    band,
    ends_sentence,
    join_parts,
    sentences,
    share_out,
    tidy,
    trim_to_sentence,
    whole_ending,
    words,
)

__all__ = ["PARTS", "Cancelled", "Options", "Progress", "Summariser", "Summary", "share_out"]


class Cancelled(EdgechatError):
    """The summary was stopped (``Summariser.cancel``)."""


class Summariser:
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

    # -- sizes ---------------------------------------------------------------------------

    def _ask(self, request, sampling: Sampling, more: str = ""):
        """Start one reply: a chat for chat models, a completion for base models;
        ``more`` is what was already written, to be continued."""
        if self._cancelled.is_set():
            raise Cancelled("the summary was stopped")
        if self.plain:
            return self.engine.complete(request + more, sampling)
        if more:
            request = [*request, {"role": "assistant", "content": more}]
            request.append({"role": "user", "content": MORE})
        return self.engine.chat(request, sampling, drop_oldest=False)

    def request(self, part: str, text: str, n_words: int = 0):
        """What one call asks: a completion cue for a base model, else a chat."""
        ask = prompts.plain if self.plain else prompts.messages
        return ask(self.options, part, text, n_words)

    def _size(self, request) -> int:
        """The tokens of a request's prompt."""
        if self.plain:
            return len(self.engine.tokenize(request, add_special=True))
        return len(self.engine.prompt_tokens(request))

    def _overhead(self, part: str) -> int:
        """The prompt's own tokens around the text (measured once for each kind of call)."""
        if part not in self._overheads:
            self._overheads[part] = self._size(self.request(part, "", 999))
        return self._overheads[part]

    def _reserve(self, high: int) -> int:
        """Tokens kept free after the prompt: what the engine itself keeps for a reply of
        ``prompts.max_tokens(high)``, and room for ``high`` words where the context allows."""
        n_ctx = self.engine.n_ctx
        engine_keeps = reply_reserve(prompts.max_tokens(high), n_ctx)  # as every engine keeps
        return max(engine_keeps, min(prompts.tokens_for(high * 1.2), n_ctx // 2))

    def budget(self, part: str, n_words: int = 0) -> int:
        """Tokens of document text one call can take for ``part``, writing ``n_words``."""
        high = self.map_words if part == "map" else n_words
        room = self.engine.n_ctx - self._overhead(part) - self._reserve(high) - 16
        if room < 64:
            raise EdgechatError(
                f"a {self.engine.n_ctx}-token context leaves no room for text to summarise; "
                "use a larger --ctx"
            )
        return room

    def _count(self, text: str) -> int:
        return self.chunker.count(text)

    def chunks(self, paragraphs: Iterable[str], budget: int) -> Iterator[str]:
        """Paragraphs packed into chunks of at most ``budget`` tokens."""
        return self.chunker.chunks(paragraphs, budget)

    # -- calls ---------------------------------------------------------------------------

    def _stream(self, request, target: int, high: int, more: str = "") -> tuple[str, str]:
        """One reply, stopped at the first sentence end past ``target`` words.

        Returns the text and how it ended: ``done`` (the model stopped), ``enough``
        (stopped here at a sentence end) or ``cut`` (over ``high`` words or the cap).
        """
        # Going on, only what was written is new to the engine: the rest is cached.
        planned = self._count(more) + 16 if more else self._size(request)
        reply = self._ask(request, replace(self.base, max_tokens=prompts.max_tokens(high)), more)
        out, how = "", "done"
        pieces = iter(reply)
        self.meter.started(planned)
        try:
            for piece in pieces:
                self.meter.piece()
                if piece[:1].isspace() and words(out) >= target and ends_sentence(out + piece[:1]):
                    how = "enough"
                    break
                out += piece
                n = words(out)
                # Past the band: stop, to be trimmed to the last whole sentence. With no
                # whole sentence yet, let the one under way finish (up to twice the band).
                if n > high and (trim_to_sentence(out) or n > 2 * high):
                    how = "cut"
                    break
        finally:
            pieces.close()
            self.meter.ended(reply.stats)
        if reply.stats:
            self.calls.append(reply.stats)
            if how == "done" and reply.stats.finish in ("length", "context"):
                how = "cut"
        if self._cancelled.is_set():
            raise Cancelled("the summary was stopped")
        return out.strip(), how

    def _write(self, request, want: Band, more: int, seen: set[str]) -> str:
        """A reply that lands in ``want`` words where the model lets it, in whole sentences."""
        # What the prompt says is not news: a model that echoes it has the echo dropped.
        seen |= {re.sub(r"\W+", " ", s).strip().lower() for s in sentences(SYSTEM + " " + MORE)}
        text, how = self._stream(request, want.target, want.high)
        text = tidy(self._whole(text, how), seen)
        for _ in range(more):
            have = words(text)
            if have >= want.low or how != "done" or not text:
                break
            so_far = text + self._joint(text, "") if self.plain else text
            try:
                extra, how = self._stream(request, want.target - have, want.high - have, so_far)
            except ContextOverflow:
                break  # no room left to go on: what was written stands
            extra = tidy(self._whole(extra, how), seen)
            if not words(extra):
                break
            text = f"{text}{self._joint(text, extra)}{extra}"
        return text

    def _whole(self, text: str, how: str) -> str:
        if how != "cut":
            return text
        self.trimmed = True
        whole = trim_to_sentence(text) or text.rstrip()[: text.rstrip().rfind("\n") + 1].strip()
        return whole or text.rstrip(" ,;:-") + " …"  # one unfinished sentence: mark the cut

    def _joint(self, text: str, extra: str) -> str:
        last = text.rstrip().rsplit("\n", 1)[-1].lstrip()[:1]
        listy = (last and last in "-*#") or (extra[:1] and extra[:1] in "-*#")
        if listy or self.options.style == "bullets":
            return "\n"
        return "\n\n" if self.options.length == "long" else " "

    # -- the pipeline ----------------------------------------------------------------------

    def _start(self) -> None:
        self.calls: list[Stats] = []
        self.trimmed = False
        self.meter = Meter(self.progress, self.now)

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
        with spool:
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
        answer = self._write(self.request("final", text, want.target), want, more=2, seen=set())
        if self.options.style == "bullets":
            answer = as_bullets(answer)
        self.meter.finished("writing", 1, "parts")
        return self._done(answer, chunks=1, levels=0, want=want)

    def _map(self, text: str) -> str:
        request = self.request("map", text, self.map_words)
        reply, how = self._stream(request, self.map_words * 2 // 3, self.map_words)
        return trim_to_sentence(reply) if how == "cut" else reply

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
            written.append(self._write(request, share, more=1, seen=seen))
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
            notes = [self._map(g) for g in groups]
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
        return Summary(
            answer.strip(),
            chunks,
            levels,
            list(self.calls),
            self.now() - self.meter.t0,
            band=want,
            trimmed=self.trimmed,
        )
