"""Picking each token: llama.cpp's sampler chain on the CPU, or inside the model's graph.

On a GPU, CPU sampling makes every token wait for a vocabulary's worth of logits
to come back before the next decode; llama.cpp's backend sampling
(``llama_set_sampler``) runs the same chain in the graph and returns only the token.
On an H100 it took generation from 605 to 727 tok/s (1B shape, full chain) and its
greedy tokens equal CPU greedy. On a CPU it is no faster (the chain is then built
into the CPU graph), so it is used only when every layer is on the GPU, unless
``EDGECHAT_BACKEND_SAMPLING`` says otherwise (1: always, for tests; 0: never).
"""

from __future__ import annotations

import os
from functools import partial

from edgechat.errors import EdgechatError
from edgechat.planning.plan import Sampling

ENV = "EDGECHAT_BACKEND_SAMPLING"


def chain(lc, vocab, s: Sampling):
    """llama.cpp's sampler chain for ``s`` (the caller frees it)."""
    ch = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    add = lc.llama_sampler_chain_add
    if s.repeat_penalty != 1.0:
        n_vocab = lc.llama_vocab_n_tokens(vocab)
        add(ch, lc.llama_sampler_init_penalties(n_vocab, s.repeat_last_n, s.repeat_penalty, 0, 0))
    if s.temperature <= 0:
        add(ch, lc.llama_sampler_init_greedy())
    else:
        if s.top_k > 0:
            add(ch, lc.llama_sampler_init_top_k(s.top_k))
        if s.top_p < 1.0:
            add(ch, lc.llama_sampler_init_top_p(s.top_p, 1))
        if s.min_p > 0.0:
            add(ch, lc.llama_sampler_init_min_p(s.min_p, 1))
        add(ch, lc.llama_sampler_init_temp(s.temperature))
        add(ch, lc.llama_sampler_init_dist(s.seed))
    return ch


def backend_supported(s: Sampling) -> bool:
    """Whether llama.cpp can run this chain in the graph: the repeat penalty and a
    grammar need the token history on the CPU; greedy, top-k, top-p, min-p, temperature
    and dist do not."""
    return s.repeat_penalty == 1.0 and not s.grammar


def use_backend(setting: bool | None, all_on_gpu: bool, s: Sampling) -> bool:
    """``setting`` (the engine's option) wins, then the environment, then: every layer
    on the GPU."""
    if not backend_supported(s):
        return False
    if setting is None:
        env = os.environ.get(ENV, "").strip()
        setting = {"1": True, "0": False}.get(env)
    return all_on_gpu if setting is None else setting


class Sampler:
    """One reply's sampler, for sequence ``seq``. ``next()`` is the token for the last
    decoded position, ``at(i)`` for position ``i`` of the batch; with backend sampling,
    the decode itself sampled them. ``words``: the model's ``Vocab``, which a grammar
    (``s.grammar``, llama/grammar.py) needs."""

    def __init__(
        self, lc, ctx, vocab, s: Sampling, backend: bool, seq: int = 0, words=None
    ) -> None:
        self._lc, self._ctx, self._seq = lc, ctx, seq
        self._chain = None
        if s.grammar:
            from edgechat.llama.grammar import guide_for

            self._guide = guide_for(words, s)  # before the chain: it may raise
            self._chain = chain(lc, vocab, s)
            self.backend, self._n_vocab = False, lc.llama_vocab_n_tokens(vocab)
            # Without a repeat penalty the chain keeps no history, so a token sampled
            # freely and refused by the grammar can be sampled again: check first.
            self._check_first = s.repeat_penalty == 1.0
            self.at = self._guided
            self.next = partial(self._guided, -1)
            return
        self._chain = chain(lc, vocab, s)
        # Attach before the prompt is decoded, so its last position is sampled too.
        self.backend = bool(backend and lc.llama_set_sampler(ctx, seq, self._chain))
        if self.backend:
            self._get = partial(lc.llama_get_sampled_token_ith, ctx)
        else:
            self.at = partial(lc.llama_sampler_sample, self._chain, ctx)
            self.next = partial(lc.llama_sampler_sample, self._chain, ctx, -1)

    def at(self, i: int) -> int:  # replaced per instance by the fast paths above
        tok = self._get(i)
        if tok < 0:
            raise EdgechatError(
                f"llama.cpp's backend sampling returned no token; set {ENV}=0 to sample on the CPU"
            )
        return tok

    def next(self) -> int:
        return self.at(-1)

    def _guided(self, i: int) -> int:
        """As llama-server does: the token the chain picks freely, when the grammar
        allows it; else the grammar's mask on the logits and the chain again."""
        lc, g = self._lc, self._guide
        tok = self._sample(i) if self._check_first or not g.active else -1
        if g.active and (tok < 0 or not g.allows(tok)):
            import numpy as np

            row = lc.llama_get_logits_ith(self._ctx, i)
            g.mask(np.ctypeslib.as_array(row, (self._n_vocab,)))
            tok = self._sample(i)
        g.take(tok)
        return tok

    def _sample(self, i: int) -> int:
        return self._lc.llama_sampler_sample(self._chain, self._ctx, i)

    def close(self) -> None:
        if self.backend:
            self._lc.llama_set_sampler(self._ctx, self._seq, None)
            self.backend = False
        if self._chain is not None:
            self._lc.llama_sampler_free(self._chain)
            self._chain = None
