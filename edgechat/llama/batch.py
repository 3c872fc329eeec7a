"""Continuous batching: several replies share one llama.cpp context, and each step is one
``llama_decode`` holding every generating sequence's next token plus chunks of the
prompts that wait, as llama-server does; beside replies being written, a prompt's chunks
are sized to about ``STEP_S`` of decoding, so those replies never wait long.

- Each reply runs in a slot (its ``seq_id``), with its own sampler chain, stop strings
  and limits, sampling at its own index in the batch.
- The engine's context has a cache of n_ctx cells for each sequence (llama/params.py):
  each reply gets the context ``--ctx`` names, as it would alone, and its tokens are
  exactly the ones it would get alone.
- A finished slot keeps its cache: a request that continues a conversation goes back
  to its slot and evaluates only what is new; other requests take the least recently
  used slot, so each conversation's cache lasts as long as it can, and start from a
  copy of the cache of the slot that holds most of their start.
- A cache is reused only by requests of its owner (``SeqRequest.owner``: the server
  keeps each client's apart), so no one learns from a reused start, or from how soon
  a reply came, what someone else's prompt began with.
- ``llama_decode`` returning 1 (no room left in the cache) puts the newest prompt back
  to wait rather than failing the others; a failed decode fails only the replies it
  concerns, and no cache but theirs is touched.

The batch's arrays are allocated once; a step writes a few numbers per sequence into
them. Not thread-safe: every call on the one llama thread (serve/worker.py).
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edgechat.errors import EdgechatError
from edgechat.llama.cache import keep_prefix, shared, worth_copying
from edgechat.llama.engine import Engine, EngineError
from edgechat.llama.pieces import Detokenizer, StopFilter
from edgechat.llama.recovery import Recovery
from edgechat.llama.reply import Stats
from edgechat.llama.sampling import Sampler
from edgechat.llama.scoring import check_finite
from edgechat.planning.plan import Sampling

# While replies are being written, a prompt read beside them comes in chunks of about this
# many seconds of decoding, so their tokens keep coming. A whole batch of prompt at once (as
# llama-server reads it) paused every other stream 2.0 s on SmolLM2 on two cores; chunks of
# 0.5 s pause them 0.58 s, and the prompt's own first token comes 8 % later (0.25 s: 0.31 s,
# but 42 % later: smaller chunks read a prompt less efficiently). benchmarks/stall.py.
STEP_S = 0.5
MIN_CHUNK = 32  # tokens: below this, a chunk reads the prompt too slowly for what it saves


@dataclass(frozen=True)
class SeqRequest:
    """One reply to generate: its prompt's tokens, how to sample, and where text goes.

    The callbacks run on the llama thread: ``on_text(piece)`` for each piece of the
    reply, then ``on_end(stats, error)`` once (``error`` None unless it failed).
    """

    tokens: list[int]
    sampling: Sampling
    on_text: Callable[[str], None]
    on_end: Callable[[Stats, Exception | None], None]
    stops: tuple[str, ...] = ()
    n_ctx: int = 0  # the context this reply may fill; 0: the slot's whole share
    dropped: int = 0  # old turns that made way for the prompt (reported in its stats)
    t_request: float = field(default_factory=time.perf_counter)
    owner: str = ""  # whose cache this is: reused only by requests of the same owner


class _Slot:
    """One sequence of the context, and the reply it is writing (if any)."""

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.cached: list[int] = []  # what its cache holds, position by position
        self.owner = ""  # whose prompts those are
        self.req: SeqRequest | None = None
        self.last_used = 0.0
        self.order = 0  # admission number: the highest is the newest
        self.todo: list[int] = []  # the prompt's tokens the cache lacks
        self.done = 0  # of those, evaluated
        self.pending = -1  # the sampled token to decode next (-1: still reading the prompt)
        self.idx = -1  # its logits' row in this step's batch
        self.limit = 0
        self.n_gen = 0
        self.t_prompt = self.prompt_s = self.t_first = self.t_last = 0.0
        self.sampler: Sampler | None = None
        self.text_of: Detokenizer | None = None
        self.stops: StopFilter | None = None


class Batcher(Recovery):
    """The engine's sequences as slots, advanced together one decode at a time."""

    def __init__(self, engine: Engine) -> None:
        lc = self._lc = engine._lc
        self.engine = engine
        self._ctx, self._vocab = engine._ctx, engine._vocab
        self._decode = lc.llama_decode  # bound once
        self._eog: dict[int, bool] = {}  # token -> whether it ends a reply, as met
        self.n_ctx = engine.n_ctx  # each slot's context
        self.slots = [_Slot(i) for i in range(engine.n_seq)]
        self._admitted = 0
        self._full = False  # the cache refused a step: start nothing new until a reply ends
        self.threads = engine.plan.n_threads  # what the next decode runs on
        self.decoded: tuple[int, int, float] | None = None  # tokens, prompt's, seconds
        self._token_s = 0.0  # seconds a token of a step with prompt in it took, lately
        cap = self._cap = max(engine.plan.n_batch, engine.n_seq)
        # The batch, once: llama_batch points into these arrays; a step fills their heads.
        self._tok = (lc.llama_token * cap)()
        self._pos = (lc.llama_pos * cap)()
        self._ids = (lc.llama_seq_id * cap)()  # one sequence per token: ids[i] is token i's
        self._n_ids = (ctypes.c_int32 * cap)(*([1] * cap))
        self._logits = (ctypes.c_int8 * cap)()
        id_ptr = ctypes.POINTER(lc.llama_seq_id)
        size, base = ctypes.sizeof(lc.llama_seq_id), ctypes.addressof(self._ids)
        self._id_ptrs = (id_ptr * cap)(*(ctypes.cast(base + i * size, id_ptr) for i in range(cap)))
        b = self._batch = lc.llama_batch()
        b.token = ctypes.cast(self._tok, ctypes.POINTER(lc.llama_token))
        b.pos = ctypes.cast(self._pos, ctypes.POINTER(lc.llama_pos))
        b.n_seq_id = ctypes.cast(self._n_ids, ctypes.POINTER(ctypes.c_int32))
        b.seq_id = ctypes.cast(self._id_ptrs, ctypes.POINTER(id_ptr))
        b.logits = ctypes.cast(self._logits, ctypes.POINTER(ctypes.c_int8))

    # -- slots -------------------------------------------------------------------------

    @property
    def busy(self) -> int:
        """Slots writing a reply now."""
        return sum(s.req is not None for s in self.slots)

    @property
    def free(self) -> int:
        return len(self.slots) - self.busy

    def admit(self, req: SeqRequest) -> int | None:
        """Start ``req`` in a free slot: the one whose cache its prompt continues (the
        next turn of that conversation), else the least recently used, whose cache
        starts as a copy of another slot's when that one holds more of the prompt's
        start (the system prompt every chat begins with). Only caches of the request's
        owner count: another's is never reused or copied, and a slot taken from another
        owner starts empty. Returns the slot, or None when none is free (or the cache
        is full until a reply ends)."""
        free = [s for s in self.slots if s.req is None]
        if not free or (self._full and len(free) < len(self.slots)):
            return None
        tokens, owner = req.tokens, req.owner
        if not tokens:
            raise EdgechatError("the prompt is empty")

        def reuse(s: _Slot) -> int:
            return shared(s.cached, tokens) if s.owner == owner else 0

        slot = max(free, key=reuse)
        n = reuse(slot)
        if n == 0 or 4 * n < 3 * len(slot.cached):
            # Not the continuation of that slot's conversation: take the least recently
            # used slot (an empty one first), keeping the others' for their next turns.
            slot = min(free, key=lambda s: s.last_used)
            n = reuse(slot)
        if slot.owner != owner:  # another's cache: nothing of it stays
            slot.cached.clear()
            slot.owner = owner
        donor = max(self.slots, key=lambda s: reuse(s) if s is not slot else -1)
        if worth_copying(reuse(donor) - n, self.n_ctx):
            self._copy(donor, slot)
        n = keep_prefix(self.engine, slot.seq, slot.cached, tokens)
        engine = self.engine
        slot.req = req
        slot.todo, slot.done, slot.pending, slot.idx = tokens[n:], 0, -1, -1
        slot.limit = min(req.n_ctx or self.n_ctx, self.n_ctx)
        slot.n_gen = 0
        slot.t_prompt = slot.prompt_s = slot.t_first = slot.t_last = 0.0
        backend = engine._backend_sampling(req.sampling)
        slot.sampler = Sampler(
            self._lc, self._ctx, self._vocab, req.sampling, backend, slot.seq, engine.vocab
        )
        slot.text_of = Detokenizer(engine.vocab)
        slot.stops = StopFilter(list(req.stops))
        self._admitted += 1
        slot.order = self._admitted
        return slot.seq

    def _copy(self, donor: _Slot, slot: _Slot) -> None:
        """Start ``slot``'s cache as a copy of ``donor``'s: every chat through a server
        starts with the same template and system prompt, and copying another slot's
        cache of it is much quicker than reading it again (on two cores, four new
        clients' first tokens came 0.5 s after they asked, most of it spent reading the
        same system prompt four times). llama.cpp copies a whole sequence's cache
        between the caches of two sequences (as llama-server does for its ``n_cmpl``
        children), at the next decode; keep_prefix then trims the copy to what this
        prompt shares. The values copied are the ones this prompt would compute for
        the same tokens at the same positions, so its reply is unchanged."""
        mem = self._lc.llama_get_memory(self._ctx)
        self._lc.llama_memory_seq_cp(mem, donor.seq, slot.seq, -1, -1)
        slot.cached[:] = donor.cached

    def set_threads(self, n: int) -> None:
        """Decode on ``n`` threads from now on (serve follows the free cores with it)."""
        if n != self.threads:
            self._lc.llama_set_n_threads(self._ctx, n, n)
            self.threads = n

    def cancel(self, seq: int) -> None:
        """End slot ``seq``'s reply now (its client left); its cache stays for reuse."""
        slot = self.slots[seq]
        if slot.req is not None:
            self._end(slot, "cancelled", time.perf_counter())

    def cancel_all(self) -> None:
        for slot in self.slots:
            self.cancel(slot.seq)

    # -- one step ----------------------------------------------------------------------

    def step(self) -> list[SeqRequest]:
        """One decode for every busy slot: each generating slot's next token, then prompt
        chunks, oldest request first, while the batch has room. Returns the requests
        that must wait again (the cache had no room for them)."""
        tok, pos, ids, logits = self._tok, self._pos, self._ids, self._logits
        busy = [s for s in self.slots if s.req is not None]
        reading = [s for s in busy if s.pending < 0]
        takes: dict[int, int] = {}
        if reading:  # the oldest prompts first, while the batch has room
            writing = len(busy) - len(reading)
            room = self._cap - writing
            if writing and self._token_s:
                room = min(room, max(MIN_CHUNK, int(STEP_S / self._token_s) - writing))
            for s in sorted(reading, key=lambda s: s.order):
                take = min(room, len(s.todo) - s.done)
                if take <= 0:
                    break
                takes[s.seq] = take
                room -= take
        # In sequence order: llama.cpp splits a batch into micro-batches of consecutive
        # sequences (one cache each), so this order needs the fewest.
        n = 0
        gen: list[_Slot] = []
        chunks: list[tuple[_Slot, int]] = []
        now = time.perf_counter()
        for s in busy:
            if s.pending >= 0:
                tok[n] = s.pending
                pos[n] = len(s.cached)
                ids[n] = s.seq
                logits[n] = 1
                s.idx = n
                n += 1
                gen.append(s)
                continue
            take = takes.get(s.seq, 0)
            if not take:
                continue
            start, p0 = s.done, len(s.cached)
            tok[n : n + take] = s.todo[start : start + take]
            pos[n : n + take] = range(p0, p0 + take)
            ids[n : n + take] = [s.seq] * take
            logits[n : n + take] = [0] * take
            last = start + take == len(s.todo)
            if last:
                logits[n + take - 1] = 1
            s.idx = n + take - 1 if last else -1
            s.t_prompt = s.t_prompt or now
            chunks.append((s, take))
            n += take
        self.decoded = None
        if n == 0:
            return []
        self._batch.n_tokens = n
        t0 = time.perf_counter()
        rc = self._decode(self._ctx, self._batch)
        now = time.perf_counter()
        self.decoded = (n, n - len(gen), now - t0)
        if chunks:  # what a token of prompt costs, for the next chunks' size
            spent = (now - t0) / n
            self._token_s = spent if not self._token_s else 0.7 * self._token_s + 0.3 * spent
        if rc != 0:
            return self._failed(rc, chunks, gen, now)
        for s in gen:
            s.cached.append(s.pending)
        sampled = gen
        for s, take in chunks:
            s.cached.extend(s.todo[s.done : s.done + take])
            s.done += take
            if s.idx >= 0:
                s.prompt_s = now - s.t_prompt
                sampled = [*sampled, s]
                if not s.sampler.backend:  # NaN scores would sample garbage: a damaged file
                    try:
                        row = self._lc.llama_get_logits_ith(self._ctx, s.idx)
                        check_finite(row, self.engine.n_vocab, EngineError)
                    except EngineError as exc:
                        self._end(s, "error", now, exc)
                        continue
        for s in sampled:
            if s.req is not None:
                self._next(s, now)
        return []

    def _next(self, s: _Slot, now: float) -> None:
        """Sample slot ``s``'s token at its row, hand on its text, and end it or queue
        the token for the next step."""
        req = s.req
        try:
            token = s.sampler.at(s.idx)
        except EdgechatError as exc:
            self._end(s, "error", now, exc)
            return
        eog = self._eog.get(token)
        if eog is None:  # one C call per token met, not per token sampled
            eog = self._eog[token] = bool(self._lc.llama_vocab_is_eog(self._vocab, token))
        if eog:
            self._end(s, "stop", now)
            return
        text = s.text_of(token)
        s.n_gen += 1
        s.t_last = now
        if s.n_gen == 1:
            s.t_first = now
        if text:
            out, hit = s.stops.feed(text)
            if out:
                req.on_text(out)
            if hit:
                self._end(s, "stop", now, flush=False)
                return
        if s.n_gen >= req.sampling.max_tokens:
            self._end(s, "length", now)
        elif len(s.cached) >= s.limit:
            self._end(s, "context", now)
        else:
            s.pending = token

    def _end(
        self,
        s: _Slot,
        finish: str,
        now: float,
        error: Exception | None = None,
        flush: bool = True,
    ) -> None:
        req = s.req
        self._full = False
        if flush and finish in ("stop", "length", "context"):
            out, hit = s.stops.feed(s.text_of.flush())
            out += "" if hit else s.stops.flush()
            if out:
                req.on_text(out)
        s.sampler.close()
        s.req, s.sampler, s.text_of, s.stops = None, None, None, None
        s.pending, s.idx = -1, -1
        s.last_used = now
        stats = Stats(
            load_s=self.engine.load_s,
            prompt_tokens=len(req.tokens),
            prompt_eval_tokens=len(s.todo),
            prompt_s=s.prompt_s or (now - (s.t_prompt or now)),
            gen_tokens=s.n_gen,
            gen_s=s.t_last - s.t_first,
            ttft_s=(s.t_first - req.t_request) if s.n_gen else 0.0,
            n_ctx_used=len(s.cached),
            n_ctx=s.limit,
            finish=finish,
            dropped_messages=req.dropped,
        )
        req.on_end(stats, error)

    def reset(self) -> None:
        """Forget every slot's reply and cache, without a word to their requests: after
        an error the caller has reported itself."""
        for s in self.slots:
            if s.sampler is not None:
                s.sampler.close()
            s.req, s.sampler, s.text_of, s.stops = None, None, None, None
            s.pending, s.idx = -1, -1
            s.cached.clear()
        self._full = False
        self.engine.clear_cache()
