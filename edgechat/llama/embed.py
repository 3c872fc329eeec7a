"""Embeddings of texts with a loaded model, as llama-server computes them with
``--embeddings``: a llama.cpp context of its own on the same weights, in embeddings mode,
each text one sequence pooled into one vector (the model's own pooling, mean for a chat
model, which names none), L2-normalised as Ollama's ``/api/embed`` and OpenAI's answer.

The context is made on the first request and freed with the engine; it holds
``n_ctx`` tokens, the longest text it takes (``truncate`` cuts longer ones).
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import replace

from edgechat.errors import ContextOverflow, EdgechatError
from edgechat.llama.params import context_params

MAX_CTX = 2048  # an embedding model's usual window; a chat model reads no more for one


class Embedder:
    def __init__(self, engine) -> None:
        lc = self._lc = engine._lc
        self._engine = engine
        plan = replace(engine.plan, n_ctx=min(engine.n_ctx, MAX_CTX), n_seq=1)
        cparams = context_params(lc, plan)
        cparams.embeddings = True
        cparams.n_batch = cparams.n_ubatch = plan.n_ctx  # a text in one step: pooled whole
        arch = engine.meta("general.architecture") or ""
        if engine.meta(f"{arch}.pooling_type") is None:
            cparams.pooling_type = lc.LLAMA_POOLING_TYPE_MEAN
        self.n_ctx = plan.n_ctx
        self._ctx = lc.llama_init_from_model(engine._model, cparams)
        if not self._ctx:
            raise EdgechatError("llama.cpp could not make an embeddings context for this model")
        self.n_embd = lc.llama_model_n_embd(engine._model)
        self._batch = lc.llama_batch_init(self.n_ctx, 0, 1)

    def __call__(self, texts: list[str], truncate: bool = True) -> tuple[list[list[float]], int]:
        """One normalised vector a text, and the tokens read."""
        lc, ctx, b = self._lc, self._ctx, self._batch
        out, total = [], 0
        for text in texts:
            tokens = self._engine.tokenize(text, add_special=True) or [0]
            if len(tokens) > self.n_ctx:
                if not truncate:
                    raise ContextOverflow(
                        f"an input is {len(tokens)} tokens, more than the {self.n_ctx} "
                        "an embedding takes; shorten it or allow truncation"
                    )
                tokens = tokens[: self.n_ctx]
            total += len(tokens)
            lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
            b.n_tokens = len(tokens)
            for i, tok in enumerate(tokens):
                b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, i, 1, 1
                b.seq_id[i][0] = 0
            if lc.llama_decode(ctx, b) != 0:
                raise EdgechatError("llama.cpp could not compute the embedding")
            ptr = lc.llama_get_embeddings_seq(ctx, 0)
            if not ptr:
                raise EdgechatError("this model gives no pooled embedding")
            vec = ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float))[: self.n_embd]
            norm = math.sqrt(sum(x * x for x in vec)) or 1.0
            out.append([x / norm for x in vec])
        return out, total

    def close(self) -> None:
        if self._ctx:
            self._lc.llama_batch_free(self._batch)
            self._lc.llama_free(self._ctx)
            self._ctx = None
