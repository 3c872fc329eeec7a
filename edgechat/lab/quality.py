"""What a quant costs in quality, measured on the user's own text.

The method of llama.cpp's ``llama-perplexity --kl-divergence``: the text is tokenized
once and cut into chunks of n_ctx tokens, each starting with BOS for models that use
one; in each chunk only the second half is scored, so every scored token has at
least n_ctx/2 tokens of context. For each scored position: the model's negative log-likelihood of
the true next token (perplexity = exp of the mean), the KL divergence of its
next-token distribution from the reference model's, and whether both put the same
token first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from edgechat.errors import EdgechatError
from edgechat.llama.engine import Engine


@dataclass(frozen=True)
class Quality:
    model: str
    ref: str
    n_ctx: int
    chunks: int
    tokens_scored: int
    ppl: float
    ppl_ref: float
    kl_mean: float
    top1_agreement: float  # 0..1
    seconds: float

    @property
    def ppl_delta_pct(self) -> float:
        return 100 * (self.ppl / self.ppl_ref - 1)

    def as_dict(self) -> dict:
        return {**asdict(self), "ppl_delta_pct": round(self.ppl_delta_pct, 3)}


def _log_softmax(logits):
    import numpy as np

    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def chunks_of(engine: Engine, text: str, n_ctx: int) -> list[list[int]]:
    tokens = engine.tokenize(text, add_special=True)
    lc, vocab = engine._lc, engine._vocab
    bos = lc.llama_vocab_bos(vocab) if lc.llama_vocab_get_add_bos(vocab) else -1
    n_chunks = len(tokens) // n_ctx
    if n_chunks < 1:
        raise EdgechatError(
            f"the text is {len(tokens)} tokens; at least {n_ctx} are needed for one chunk of "
            f"--ctx {n_ctx} (give a longer text or a smaller --ctx)"
        )
    out = []
    for i in range(n_chunks):
        chunk = tokens[i * n_ctx : (i + 1) * n_ctx]
        if bos >= 0:
            chunk[0] = bos  # as llama-perplexity does, for models that start with BOS
        out.append(chunk)
    return out


def compare(
    model: Engine,
    ref: Engine,
    text: str,
    n_ctx: int = 512,
    progress: Callable[[int, int], None] | None = None,
) -> Quality:
    """Perplexity of both, KL divergence of ``model`` from ``ref``, top-1 agreement."""
    import numpy as np

    if model.n_vocab != ref.n_vocab or model.vocabulary() != ref.vocabulary():
        raise EdgechatError(
            "the two models have different vocabularies, so their token distributions cannot "
            "be compared; pick a reference from the same family (another quant of the model)"
        )
    for engine in (model, ref):
        if engine.n_ctx < n_ctx:
            raise EdgechatError(f"load both models with a context of at least {n_ctx}")
    started = time.perf_counter()
    chunks = chunks_of(ref, text, n_ctx)
    first = n_ctx // 2
    nll = nll_ref = kl = 0.0
    agree = scored = 0
    for i, chunk in enumerate(chunks, 1):
        target = np.asarray(chunk[first + 1 :])
        lp_ref = _log_softmax(ref.logits(chunk, first)[:-1])
        lp = _log_softmax(model.logits(chunk, first)[:-1])
        rows = np.arange(len(target))
        nll -= float(lp[rows, target].sum())
        nll_ref -= float(lp_ref[rows, target].sum())
        kl += float((np.exp(lp_ref) * (lp_ref - lp)).sum())
        agree += int((lp.argmax(axis=1) == lp_ref.argmax(axis=1)).sum())
        scored += len(target)
        if progress:
            progress(i, len(chunks))
    return Quality(
        model=str(model.plan.model_path),
        ref=str(ref.plan.model_path),
        n_ctx=n_ctx,
        chunks=len(chunks),
        tokens_scored=scored,
        ppl=math.exp(nll / scored),
        ppl_ref=math.exp(nll_ref / scored),
        kl_mean=kl / scored,
        top1_agreement=agree / scored,
        seconds=time.perf_counter() - started,
    )
