"""What a quant costs in quality, measured on the user's own text.

The method of llama.cpp's ``llama-perplexity --kl-divergence``: the text is tokenized
once and cut into chunks of n_ctx tokens, each starting with BOS for models that use
one; in each chunk only the second half is scored, so every scored token has at
least n_ctx/2 tokens of context. For each scored position: the model's negative log-likelihood of
the true next token (perplexity = exp of the mean), the KL divergence of its
next-token distribution from the reference model's (its mean, and its 99th
percentile interpolated as llama-perplexity does), and whether both put the same
token first.

Judging several quants against one reference (`shrink`), the reference's
log-probabilities are computed once and kept in a file (``Reference``), as
llama-perplexity's ``--kl-divergence-base`` does, instead of running the largest
model again for every candidate.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from edgechat.errors import EdgechatError
from edgechat.llama.engine import Engine
from edgechat.planning.budget import Figures

Progress = Callable[[int, int], None]


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
    kl_p99: float | None = None

    @property
    def ppl_delta_pct(self) -> float:
        return 100 * (self.ppl / self.ppl_ref - 1)

    @property
    def ppl_ratio(self) -> float:
        return self.ppl / self.ppl_ref

    def figures(self) -> Figures:
        return Figures(self.kl_mean, self.kl_p99, self.ppl_ratio, self.top1_agreement)

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "ppl_delta_pct": round(self.ppl_delta_pct, 3),
            "ppl_ratio": round(self.ppl_ratio, 6),
        }


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


def _check_pair(model: Engine, ref: Engine, n_ctx: int) -> None:
    if model.n_vocab != ref.n_vocab or model.vocab.texts() != ref.vocab.texts():
        raise EdgechatError(
            "the two models have different vocabularies, so their token distributions cannot "
            "be compared; pick a reference from the same family (another quant of the model)"
        )
    for engine in (model, ref):
        if engine.n_ctx < n_ctx:
            raise EdgechatError(f"load both models with a context of at least {n_ctx}")


class _Tally:
    """Running sums over the scored positions of every chunk."""

    def __init__(self) -> None:
        self.nll = self.nll_ref = 0.0
        self.agree = self.scored = 0
        self.kl: list = []  # per-token KL divergences, one array per chunk

    def add(self, lp, lp_ref, target) -> None:
        import numpy as np

        rows = np.arange(len(target))
        self.nll -= float(lp[rows, target].sum())
        self.nll_ref -= float(lp_ref[rows, target].sum())
        self.kl.append((np.exp(lp_ref) * (lp_ref - lp)).sum(axis=1, dtype=np.float64))
        self.agree += int((lp.argmax(axis=1) == lp_ref.argmax(axis=1)).sum())
        self.scored += len(target)

    def result(self, model: str, ref: str, n_ctx: int, chunks: int, started: float) -> Quality:
        import numpy as np

        kl = np.concatenate(self.kl)
        return Quality(
            model=model,
            ref=ref,
            n_ctx=n_ctx,
            chunks=chunks,
            tokens_scored=self.scored,
            ppl=math.exp(self.nll / self.scored),
            ppl_ref=math.exp(self.nll_ref / self.scored),
            kl_mean=float(kl.mean()),
            top1_agreement=self.agree / self.scored,
            seconds=time.perf_counter() - started,
            kl_p99=float(np.percentile(kl, 99)),  # linear, as llama-perplexity interpolates
        )


def compare(
    model: Engine,
    ref: Engine,
    text: str,
    n_ctx: int = 512,
    progress: Progress | None = None,
) -> Quality:
    """Perplexity of both, KL divergence of ``model`` from ``ref``, top-1 agreement."""
    import numpy as np

    _check_pair(model, ref, n_ctx)
    started = time.perf_counter()
    chunks = chunks_of(ref, text, n_ctx)
    first = n_ctx // 2
    tally = _Tally()
    for i, chunk in enumerate(chunks, 1):
        target = np.asarray(chunk[first + 1 :])
        lp_ref = _log_softmax(ref.logits(chunk, first)[:-1])
        lp = _log_softmax(model.logits(chunk, first)[:-1])
        tally.add(lp, lp_ref, target)
        if progress:
            progress(i, len(chunks))
    return tally.result(
        str(model.plan.model_path), str(ref.plan.model_path), n_ctx, len(chunks), started
    )


@dataclass(frozen=True)
class Reference:
    """The reference's log-probabilities at every scored position of ``chunks``, in a
    float32 file (chunk, position, token), to judge any number of quants against."""

    model: str
    file: Path
    n_ctx: int
    chunks: tuple[tuple[int, ...], ...]
    vocabulary_hash: str
    n_vocab: int
    seconds: float

    def rows(self):
        import numpy as np

        return np.load(self.file, mmap_mode="r")


def _vocabulary_hash(engine: Engine) -> str:
    import hashlib

    return hashlib.sha256("\x00".join(engine.vocab.texts()).encode("utf-8", "replace")).hexdigest()


def reference_bytes(n_chunks: int, n_ctx: int, n_vocab: int) -> int:
    return n_chunks * (n_ctx - n_ctx // 2 - 1) * n_vocab * 4


def reference(
    ref: Engine,
    chunks: Sequence[Sequence[int]],
    file: Path,
    progress: Progress | None = None,
) -> Reference:
    """Run ``ref`` over ``chunks`` (from ``chunks_of``) once and keep its log-probabilities
    in ``file`` (written under a temporary name, renamed when whole)."""
    import numpy as np

    n_ctx = len(chunks[0])
    if ref.n_ctx < n_ctx:
        raise EdgechatError(f"load the reference with a context of at least {n_ctx}")
    first = n_ctx // 2
    need = reference_bytes(len(chunks), n_ctx, ref.n_vocab)
    free = shutil.disk_usage(file.parent).free
    if need > free * 0.9:
        from edgechat.facts.device import format_size

        raise EdgechatError(
            f"the reference's figures need {format_size(need)} in {file.parent}, which has "
            f"{format_size(free)} free: free some space, work elsewhere, or score fewer chunks"
        )
    started = time.perf_counter()
    tmp = file.with_name(f".{file.name}.{os.getpid()}.partial")
    shape = (len(chunks), n_ctx - first - 1, ref.n_vocab)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        for i, chunk in enumerate(chunks):
            out[i] = _log_softmax(ref.logits(list(chunk), first)[:-1])
            if progress:
                progress(i + 1, len(chunks))
        out.flush()
        del out
        os.replace(tmp, file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Reference(
        model=str(ref.plan.model_path),
        file=file,
        n_ctx=n_ctx,
        chunks=tuple(tuple(c) for c in chunks),
        vocabulary_hash=_vocabulary_hash(ref),
        n_vocab=ref.n_vocab,
        seconds=time.perf_counter() - started,
    )


def judge(model: Engine, ref: Reference, progress: Progress | None = None) -> Quality:
    """``compare`` against a kept ``Reference``: the same figures, the reference not run."""
    import numpy as np

    if model.n_vocab != ref.n_vocab or _vocabulary_hash(model) != ref.vocabulary_hash:
        raise EdgechatError(
            f"{Path(model.plan.model_path).name} has a different vocabulary from the "
            "reference; judge quants of the same model"
        )
    if model.n_ctx < ref.n_ctx:
        raise EdgechatError(f"load the model with a context of at least {ref.n_ctx}")
    started = time.perf_counter()
    first = ref.n_ctx // 2
    rows = ref.rows()
    tally = _Tally()
    for i, chunk in enumerate(ref.chunks):
        target = np.asarray(chunk[first + 1 :])
        lp = _log_softmax(model.logits(list(chunk), first)[:-1])
        tally.add(lp, np.asarray(rows[i]), target)
        if progress:
            progress(i + 1, len(ref.chunks))
    del rows
    return tally.result(str(model.plan.model_path), ref.model, ref.n_ctx, len(ref.chunks), started)


def keep_receipt(
    q: Quality,
    text_name: str,
    text: str,
    kind: str = "quality",
    made: dict | None = None,
    quants: tuple[str | None, str | None] | None = None,
):
    """Keep ``q`` as a receipt in the data dir (models/receipts.py) and return it.
    ``quants``: the model's and the reference's, when known (else read from the files)."""
    from edgechat.facts.gguf import inspect_file
    from edgechat.models import receipts

    if quants is None:
        quants = (inspect_file(q.model).file_type, inspect_file(q.ref).file_type)
    return receipts.add(
        receipts.Receipt(
            kind=kind,
            model=receipts.file_ref(q.model, quants[0]),
            ref=receipts.file_ref(q.ref, quants[1]),
            text=receipts.text_ref(text_name, text),
            n_ctx=q.n_ctx,
            tokens_scored=q.tokens_scored,
            ppl=q.ppl,
            ppl_ref=q.ppl_ref,
            figures=q.figures(),
            made=dict(made or {}),
        )
    )
