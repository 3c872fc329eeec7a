"""What the batcher (llama/batch.py) does when a step's decode does not go through: the
cache had no room for it, llama.cpp found the batch invalid, or it failed. Only the
replies the step concerns pay; no other slot's cache is touched."""

from __future__ import annotations

from edgechat.llama.engine import EngineError


class Recovery:
    def _make_room(self, chunks: list, gen: list, now: float) -> list:
        """The cache had no room for this step (nothing was decoded): the newest request
        still reading its prompt goes back to wait (and nothing new starts until a reply
        ends); with none, the newest reply ends where it is, as at the end of its
        context. The others go on at the next step. (A slot never fills more than its
        own cache, so this is llama.cpp's word against ours: never the others' loss.)"""
        if chunks:
            s = max((s for s, _ in chunks), key=lambda s: s.order)
            req = s.req
            s.sampler.close()
            s.req, s.sampler, s.text_of, s.stops = None, None, None, None
            s.pending, s.idx, s.last_used = -1, -1, now
            self._full = True
            return [req]
        if gen:
            self._end(max(gen, key=lambda s: s.order), "context", now)
        return []

    def _failed(self, rc: int, chunks: list, gen: list, now: float) -> list:
        """The step's decode failed (nothing of it counts), and only the replies it
        concerns pay. No room (1): see _make_room. A batch llama.cpp found invalid (-1)
        changed no cache: the replies whose tokens the model lacks end with the error,
        and the others read the same tokens again at the next step. Any other failure
        may leave part of the step in the caches: each reply of the step ends with the
        error, its cache cut back to what it held before; the other slots keep theirs."""
        if rc == 1:
            return self._make_room(chunks, gen, now)
        n_vocab = self.engine.n_vocab
        ours = [*gen, *(s for s, _ in chunks)]
        if rc == -1:
            bad = [s for s in gen if not 0 <= s.pending < n_vocab]
            bad += [
                s
                for s, take in chunks
                if any(not 0 <= t < n_vocab for t in s.todo[s.done : s.done + take])
            ]
            why = f"a token outside the model's vocabulary (0 to {n_vocab - 1})"
            ours = bad or ours
        else:
            why = "llama.cpp failed while generating"
            mem = self._lc.llama_get_memory(self._ctx)
            for s in ours:
                self._lc.llama_memory_seq_rm(mem, s.seq, len(s.cached), -1)
        for s in ours:
            self._end(s, "error", now, EngineError(f"{why} (code {rc})"), flush=False)
        return []
