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
reuses them from one call to the next.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

from edgechat.errors import ContextOverflow, EdgechatError
from edgechat.llama.contract import ChatEngine, reply_reserve
from edgechat.llama.reply import Stats
from edgechat.planning.plan import Sampling
from edgechat.tasks import summary_prompts as prompts
from edgechat.tasks.chunking import Chunker
from edgechat.tasks.summary_prompts import MAP_WORDS, MORE, SHAPES, SYSTEM
from edgechat.tasks.summary_text import (
    Band,
    as_bullets,
    band,
    ends_sentence,
    join_parts,
    sentences,
    tidy,
    trim_to_sentence,
    whole_ending,
    words,
)

PARTS = {"short": 3, "medium": 5, "long": 8}  # points a summary of each length makes


def _tokens_for(n_words: float) -> int:
    """A token cap that lets ``n_words`` words through (about 1.3-1.5 tokens a word)."""
    return int(n_words * 1.7) + 24


def _max_tokens(high: int) -> int:
    """The cap of a reply meant to stop near ``high`` words: room to finish a sentence."""
    return _tokens_for(high * 2.2)


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
    eta_s: float | None  # seconds left for the whole summary, not only this stage


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


class Cancelled(EdgechatError):
    """The summary was stopped (``Summariser.cancel``)."""


class Summariser:
    def __init__(
        self,
        engine: ChatEngine,
        options: Options | None = None,
        sampling: Sampling | None = None,
        progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.engine = engine
        self.options = options or Options()
        if self.options.length not in SHAPES or self.options.style not in ("paragraph", "bullets"):
            raise EdgechatError("length is short|medium|long and style paragraph|bullets")
        # A little repetition penalty: small models otherwise loop on long inputs.
        self.base = replace(sampling or Sampling(temperature=0.3), repeat_penalty=1.1)
        self.progress = progress or (lambda p: None)
        self.calls: list[Stats] = []
        self.trimmed = False
        self.chunker = Chunker(engine)
        # A partial summary in a small context is shorter: its room is the next chunk's.
        self.map_words = min(MAP_WORDS, max(24, engine.n_ctx // 16))
        # A base model (no chat template) is asked by plain completion: the text, then
        # "Summary ...:"; a chat template it never learned only makes it echo the prompt.
        self.plain = not engine.info().get("chat_template", True)
        self._cancelled = threading.Event()
        self._t0 = 0.0

    def cancel(self) -> None:
        """Stop the whole summary, not just the call in progress. Safe from any thread:
        the engine forgets a cancel at its next call, so the summariser keeps its own
        (and stays cancelled: make a new one for the next summary)."""
        self._cancelled.set()
        self.engine.cancel()

    # -- sizes ---------------------------------------------------------------------------

    def _messages(self, part: str, text: str, n_words: int = 0) -> list[dict]:
        return prompts.messages(self.options, part, text, n_words)

    def _prompt(self, part: str, text: str, n_words: int = 0) -> str:
        return prompts.plain(self.options, part, text, n_words)

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
        if self.plain:
            return self._prompt(part, text, n_words)
        return self._messages(part, text, n_words)

    def _overhead(self, part: str) -> int:
        if self.plain:
            return len(self.engine.tokenize(self._prompt(part, "", 999), add_special=True))
        return len(self.engine.prompt_tokens(self._messages(part, "", 999)))

    def _reserve(self, high: int) -> int:
        """Tokens kept free after the prompt: what the engine itself keeps for a reply of
        ``_max_tokens(high)``, and room for ``high`` words where the context allows."""
        n_ctx = self.engine.n_ctx
        engine_keeps = reply_reserve(_max_tokens(high), n_ctx)  # as every engine keeps
        return max(engine_keeps, min(_tokens_for(high * 1.2), n_ctx // 2))

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
        reply = self._ask(request, replace(self.base, max_tokens=_max_tokens(high)), more)
        out, how = "", "done"
        pieces = iter(reply)
        try:
            for piece in pieces:
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

    # -- progress --------------------------------------------------------------------------

    def _eta(self, maps_left: int, notes: int, parts_left: int) -> float | None:
        """Seconds left for the whole summary, from this run's own measured rates.

        The remaining map calls cost what the map calls so far cost on average; the
        reduce reads every partial summary once and writes the summary's words.
        """
        calls = self.calls
        if not calls:
            return None
        engine_s = sum(s.prompt_s + s.gen_s for s in calls)
        per_in = sum(s.prompt_s for s in calls) / max(1, sum(s.prompt_eval_tokens for s in calls))
        per_out = sum(s.gen_s for s in calls) / max(1, sum(s.gen_tokens for s in calls))
        mean_in = sum(s.prompt_eval_tokens for s in calls) / len(calls)
        mean_out = sum(s.gen_tokens for s in calls) / len(calls)
        left = maps_left * (mean_in * per_in + mean_out * per_out)
        if parts_left:
            share = parts_left / max(1, PARTS[self.options.length])
            reduce_in = (notes + maps_left) * _tokens_for(self.map_words * 0.7) * share
            reduce_out = _tokens_for(band(self.options.length).target) * share
            left += reduce_in * per_in + reduce_out * per_out + parts_left * 0.05
        overhead = (time.perf_counter() - self._t0) / max(engine_s, 1e-6)
        return left * max(1.0, overhead)

    # -- the pipeline ----------------------------------------------------------------------

    def run(self, paragraphs: Iterable[str], size_hint: int | None = None) -> Summary:
        """Summarise the document; ``size_hint`` (bytes) lets progress estimate a total."""
        self._t0 = time.perf_counter()
        self.calls = []
        self.trimmed = False
        if self.base.seed != Sampling().seed:
            # A seeded summary repeats exactly only from the same start: evaluating a
            # prompt in other batches (a cache hit) changes the logits in the last bits.
            self.engine.clear_cache()
        high = band(self.options.length).high
        final_budget = self.budget("final", high)
        # Chunks small enough that one of two can be written straight as half the summary,
        # and never one chunk for a document too big for one call (it has at least two).
        map_budget = min(self.budget("map"), self.budget("part", high // 2), final_budget)
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
            return self._one_call(text)

        def everything() -> Iterator[str]:
            yield from head
            yield from stream

        # A document of a few chunks: each chunk is one part of the summary, written from
        # the text itself. More chunks than parts: each gets a partial summary (map) and
        # the partial summaries are shared out among the parts (reduce).
        parts = PARTS[self.options.length]
        held: list[str] = []
        notes: list[str] = []
        read_bytes = 0
        for i, chunk in enumerate(self.chunks(everything(), map_budget), 1):
            read_bytes += len(chunk.encode("utf-8", "replace"))
            if i <= parts:
                held.append(chunk)
                continue
            if held:  # more than `parts` chunks after all: the held ones get notes too
                for j, old in enumerate(held, 1):
                    notes.append(self._map(old))
                    self._map_progress(j, i, read_bytes, size_hint)
                held = []
            notes.append(self._map(chunk))
            self._map_progress(i, i, read_bytes, size_hint)
        if held:
            return self._parts(held, chunks=len(held), levels=0, source="text")
        self.progress(Progress("map", len(notes), len(notes), self._eta(0, len(notes), parts)))
        return self.reduce(notes, chunks=len(notes))

    def _map_progress(self, done: int, read: int, read_bytes: int, size_hint: int | None) -> None:
        total = None
        if size_hint:
            total = max(read, round(read * size_hint / max(read_bytes, 1)))
        eta = self._eta(total - done, done, PARTS[self.options.length]) if total else None
        self.progress(Progress("map", done, total, eta))

    def _one_call(self, text: str) -> Summary:
        want = band(self.options.length, words(text))
        self.progress(Progress("final", 0, 1, None))
        answer = self._write(self.request("final", text, want.target), want, more=2, seen=set())
        if self.options.style == "bullets":
            answer = as_bullets(answer)
        self.progress(Progress("final", 1, 1, 0.0))
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
        for j, group in enumerate(groups, 1):
            if source == "notes":
                pieces, depth = self._condense(group.split("\n\n"), part_budget)
                group = "\n\n".join(pieces)
                deepest = max(deepest, levels + depth)
            request = self.request("part", group, share.target)
            written.append(self._write(request, share, more=1, seen=seen))
            eta = self._eta(0, 0, n_parts - j)
            self.progress(Progress("reduce", j, n_parts, eta if j < n_parts else 0.0))
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
        self._t0 = time.perf_counter()
        self.calls = []
        self.trimmed = False
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
            time.perf_counter() - self._t0,
            band=want,
            trimmed=self.trimmed,
        )
