"""One call of a summary to the model, and what is done with its reply: the request and
its size in tokens, the reply stopped near its word target and trimmed to whole
sentences, asked to go on when it stops short, and checked against its source
(tasks/summary_check.py), a sentence the source does not support written again or
dropped. The pipeline that makes these calls is tasks/summarise.py."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import replace

from edgechat.errors import ContextOverflow, EdgechatError
from edgechat.limits import RANDOM_SEED
from edgechat.llama.contract import reply_reserve
from edgechat.planning.plan import Sampling
from edgechat.tasks import summary_prompts as prompts
from edgechat.tasks.grounding import SourceIndex
from edgechat.tasks.summary_check import Check, edit, stand_ins
from edgechat.tasks.summary_prompts import MORE, SYSTEM
from edgechat.tasks.summary_text import (
    Band,
    ends_sentence,
    remember,
    repeats,
    said,
    sentences,
    tidy,
    trim_to_sentence,
    whole_ending,
    within,
    words,
)

_MARKER = re.compile(r"^\s*(?:[-*•+]|\d+[.)])\s+")
REPAIRS = 4  # sentences written again, at most, for one reply and its continuations


class Cancelled(EdgechatError):
    """The summary was stopped (``Summariser.cancel``)."""


class Calls:
    """The summariser's calls (its pipeline is ``Summariser``, which sets ``engine``,
    ``options``, ``base``, ``plain``, ``map_words``, ``chunker``, ``meter``, ``calls``,
    ``check`` and ``_cancelled``)."""

    # -- sizes ---------------------------------------------------------------------------

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

    # -- calls ---------------------------------------------------------------------------

    def _ask(self, request, sampling: Sampling, more: str = "", follow: str = MORE):
        """Start one reply: a chat for chat models, a completion for base models;
        ``more`` is what was already written, to be continued (``follow`` says how)."""
        if self._cancelled.is_set():
            raise Cancelled("the summary was stopped")
        if self.plain:
            return self.engine.complete(request + more, sampling)
        if more:
            request = [*request, {"role": "assistant", "content": more}]
            request.append({"role": "user", "content": follow})
        return self.engine.chat(request, sampling, drop_oldest=False)

    def _stream(
        self,
        request,
        target: int,
        high: int,
        more: str = "",
        follow: str = MORE,
        sampling=None,
        planned: bool = True,
    ) -> tuple[str, str]:
        """One reply, stopped at the first sentence end past ``target`` words.

        Returns the text and how it ended: ``done`` (the model stopped), ``enough``
        (stopped here at a sentence end) or ``cut`` (over ``high`` words or the cap).
        ``planned``: the time left counted this call (a sentence written again is not).
        """
        # Going on, only what was written is new to the engine: the rest is cached.
        prompt = self._count(more) + 16 if more else self._size(request)
        sampling = replace(sampling or self.base, max_tokens=prompts.max_tokens(high))
        reply = self._ask(request, sampling, more, follow)
        out, how = "", "done"
        pieces = iter(reply)
        self.meter.started(prompt, prompts.tokens_of(target), planned)
        hook = hasattr(self.engine, "on_prompt")
        if hook:
            self.engine.on_prompt = self.meter.prompt  # how far the prompt is read
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
            if hook:
                self.engine.on_prompt = None
            self.meter.ended(reply.stats)
        if reply.stats:
            self.calls.append(reply.stats)
            if how == "done" and reply.stats.finish in ("length", "context"):
                how = "cut"
        if self._cancelled.is_set():
            raise Cancelled("the summary was stopped")
        return out.strip(), how

    def _write(
        self,
        request,
        want: Band,
        more: int,
        seen: set[str],
        sources=(),
        level: str = "part",
        source: tuple[str, bool] = ("", True),
    ) -> str:
        """A reply that lands in ``want`` words where the model lets it, in whole
        sentences, each checked against ``sources``. Where the check left it short and
        the model wrote nothing that held, ``source`` (the text it was written from, and
        whether that is the document's own words) lends sentences (``stand_ins``)."""
        self._repairs = REPAIRS
        # What the prompt says is not news: a model that echoes it has the echo dropped.
        for echo in sentences(SYSTEM + " " + MORE):
            remember(seen, echo)
        text, how = self._stream(request, want.target, want.high)
        changes = len(self.check.changes)
        text = self._checked(request, tidy(self._whole(text, how), seen), sources, level, "", seen)
        if not text and len(self.check.changes) > changes:
            # Not one sentence held: once more, told what the text does not say.
            again, sampling = self._told(request, self._avoided(changes))
            text, how = self._stream(again, want.target, want.high, sampling=sampling)
            text = tidy(self._whole(text, how), seen)
            text = self._checked(again, text, sources, level, "", seen)
        for _ in range(more + 2 * (len(self.check.changes) > changes)):
            have = words(text)
            # A reply the check made short goes on, whatever stopped the model.
            checked_short = len(self.check.changes) > changes
            if have >= want.low or not text or (how != "done" and not checked_short):
                break
            so_far = text + self._joint(text, "") if self.plain else text
            follow = MORE + prompts.avoid(self._avoided(changes))
            try:
                extra, how = self._stream(
                    request, want.target - have, want.high - have, so_far, follow
                )
            except ContextOverflow:
                break  # no room left to go on: what was written stands
            extra = tidy(self._whole(extra, how), seen)
            written = len(self.check.changes)
            extra = self._checked(request, extra, sources, level, text, seen)
            if not words(extra) and len(self.check.changes) > written:
                continue  # all of it unsupported: once more, told what to leave out
            if not words(extra):
                break
            text = f"{text}{self._joint(text, extra)}{extra}"
        text = whole_ending(text)  # as the summary will end: no lead-in left open
        if words(text) < want.low and len(self.check.changes) > changes and source[0]:
            dropped = [c.sentence for c in self.check.changes[changes:]]
            have = words(text)
            lent = stand_ins(source[0], dropped, want.low - have, want.high - have, source[1])
            self.check.filled += lent
            for sentence in lent:
                text = f"{text}{self._joint(text, sentence)}{sentence}" if text else sentence
        return within(text, want.high)

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

    # -- the check -------------------------------------------------------------------------

    def _checked(
        self,
        request,
        text: str,
        sources: Sequence[SourceIndex],
        level: str,
        before: str = "",
        seen: set[str] | None = None,
    ) -> str:
        """``text`` with each sentence ``sources`` do not support written again or dropped
        (the check off: as it is); a sentence written again says nothing ``seen``."""
        if not self.check.on or not text or not sources:
            return text
        t0, spent = time.perf_counter(), self._regenerating
        seen = set() if seen is None else seen

        def again(kept: str, sentence: str, avoid: list[str]) -> str:
            if self._repairs <= 0:
                return ""  # this reply's rewrites are spent: the sentence goes
            self._repairs -= 1
            so_far = f"{before}{self._joint(before, kept)}{kept}" if before and kept else ""
            new = self._regenerate(request, so_far or before or kept, sentence, avoid)
            # A rewrite says again much of the sentence it stands for, not of the others.
            if not new or repeats(seen - said(sentence), new):
                return ""
            remember(seen, new)
            return new

        out = edit(text, sources, self.check, level, again)
        self.check.seconds += time.perf_counter() - t0 - (self._regenerating - spent)
        return out

    def _avoided(self, since: int) -> list[str]:
        """What the check found unsupported since change number ``since``."""
        found = [s.text for c in self.check.changes[since:] for s in c.unsupported]
        return list(dict.fromkeys(found))

    def _told(self, request, avoid: list[str]):
        """``request`` asked again: a chat told what not to write, a base model (which
        takes no instructions) with another draw; and the sampling for it."""
        if self.plain:
            return request, self._redraw()
        told = {**request[-1], "content": request[-1]["content"] + prompts.avoid(avoid)}
        return [*request[:-1], told], self.base

    def _redraw(self) -> Sampling:
        seed = self.base.seed + 1 if self.base.seed != RANDOM_SEED else RANDOM_SEED
        return replace(self.base, temperature=max(0.8, self.base.temperature), seed=seed)

    def _regenerate(self, request, before: str, sentence: str, avoid: list[str]) -> str:
        """``sentence`` written again without ``avoid``: a chat model is told what the
        text does not say; a base model continues ``before`` with another draw."""
        t0 = time.perf_counter()
        sampling, follow = self.base, prompts.repair(sentence, avoid)
        more = f"{before}{self._joint(before, sentence)}{sentence}" if before else sentence
        if self.plain:
            sampling = self._redraw()
            more = f"{before}{self._joint(before, '')}" if before else ""
        high = max(12, words(sentence) * 3 // 2 + 8)
        try:
            text, how = self._stream(request, 1, high, more, follow, sampling, planned=False)
        except ContextOverflow:
            return ""
        finally:
            self._regenerating += time.perf_counter() - t0
        first = sentences(tidy(self._whole(text, how)).split("\n", 1)[0])[:1]
        new = _MARKER.sub("", first[0]) if first else ""
        if len(new) > 1 and new[0] == new[-1] == '"' and new.count('"') == 2:
            new = new[1:-1]  # the sentence as a quotation: it is the sentence
        # A sentence, not a scrap ("I."): as many words as the one it stands for, up to 4.
        return new if ends_sentence(new) and words(new) >= min(4, words(sentence)) else ""

    def _begin_check(self) -> None:
        self.check = Check(on=self.options.check)
        self._regenerating = 0.0
        self._repairs = REPAIRS
