"""Scoring text: the raw logits of every position, for perplexity and KL divergence
(``lab/quality.py``). Kept apart from the chat loop: it uses numpy and a full batch."""

from __future__ import annotations

from collections.abc import Sequence

from edgechat.errors import ContextOverflow


def logits(engine, tokens: Sequence[int], first: int = 0):
    """Raw next-token logits at positions ``first`` .. end of a fresh sequence.

    Row i predicts ``tokens[first + i + 1]``: what perplexity and KL divergence
    are computed from. The cache is cleared before and after.
    """
    import numpy as np

    from edgechat.llama.engine import EngineError

    lc, ctx = engine._lc, engine._ctx
    n = len(tokens)
    if n > engine.n_ctx:
        raise ContextOverflow(f"{n} tokens do not fit the {engine.n_ctx}-token context")
    n_vocab = engine.n_vocab
    out = np.empty((max(0, n - first), n_vocab), dtype=np.float32)
    step = engine.plan.n_batch
    engine.clear_cache()
    batch = lc.llama_batch_init(step, 0, 1)
    try:
        for start in range(0, n, step):
            chunk = tokens[start : start + step]
            batch.n_tokens = len(chunk)
            for j, tok in enumerate(chunk):
                batch.token[j] = tok
                batch.pos[j] = start + j
                batch.n_seq_id[j] = 1
                batch.seq_id[j][0] = 0
                batch.logits[j] = start + j >= first
            rc = lc.llama_decode(ctx, batch)
            if rc != 0:
                raise EngineError(f"llama.cpp failed to evaluate the text (code {rc})")
            for j in range(len(chunk)):
                if start + j >= first:
                    row = lc.llama_get_logits_ith(ctx, j)
                    out[start + j - first] = np.ctypeslib.as_array(row, shape=(n_vocab,))
    finally:
        lc.llama_batch_free(batch)
        engine.clear_cache()
    return out


def check_finite(row, n: int, error: type[Exception]) -> None:
    """Raise ``error`` unless the ``n`` logits at ``row`` are all finite (a damaged file
    computes NaN). No row, as with backend sampling: nothing to check."""
    if not row:
        return
    import numpy as np

    if not np.isfinite(np.ctypeslib.as_array(row, shape=(n,))).all():
        raise error(
            "the model computed NaN or infinite scores: the file is damaged (or a setting "
            "in it is); download it again"
        )
