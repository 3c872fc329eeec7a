"""Calibrate: run the model over the user's text and collect llama-imatrix's statistics.

What is collected is exactly llama-imatrix's (``tools/imatrix/imatrix.cpp`` of the
vendored llama.cpp): llama.cpp shows every graph node to ``cb_eval``; for each
``MUL_MAT`` whose weight is a ``blk.*`` tensor and whose activations are F32 with at
least 16 rows, and for every ``MUL_MAT_ID`` per expert, the sum of each input
column's squared activation and the number of rows seen. The text is tokenized once
(BOS added as the model wants) and cut into chunks of ``ctx`` tokens; each chunk
starts with BOS for models that use one, is evaluated from an empty cache with an
output at every position (so the last layer sees every row, as in llama-imatrix), and
every token of it counts. The chunk count is the most rows any weight saw / ``ctx``.
Flash attention follows the plan, as in llama-imatrix (auto); it moves attn_output's
figures by ~0.6 % (F16 sums), so compare matrices made with the same setting.

One saving llama-imatrix does not make: once the last weight it wants in a graph is
collected (learnt on the first pass), the callback stops the rest of that graph — the
output head, whose logits nobody reads here. The statistics are the same.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from edgechat.errors import EdgechatError, InputError
from edgechat.lab.imatrix import ImportanceMatrix
from edgechat.llama import ggml
from edgechat.planning.plan import RunPlan

# progress(chunks done, chunks in all, seconds left or None before the first is done)
Progress = Callable[[int, int, "float | None"], None]
MIN_ROWS = 16  # llama-imatrix ignores smaller batches


class Collector:
    """The ``cb_eval`` callback and its accumulators (float64 sums, int64 counts)."""

    def __init__(self, lc, graphs_per_pass: int = 1) -> None:
        """``graphs_per_pass``: the graphs one decode computes (its micro-batches)."""
        import numpy as np

        self._np = np
        self._g = ggml.lib()
        self.sums: dict[str, np.ndarray] = {}  # name -> (n_mat, n_cols) float64
        self.counts: dict[str, np.ndarray] = {}  # name -> (n_mat,) int64
        self.error: BaseException | None = None
        self.stop = False  # Ctrl-C seen: finish nothing more
        self._last: str | None = None  # the last weight a graph shows us, once known
        self._seen: str | None = None
        self._first_pass = True
        self._graphs = graphs_per_pass
        self._uses: dict[str, int] = {}  # first pass: how often each weight was shown
        self._scratch = np.empty(0, dtype=np.uint8)
        self.callback = lc.ggml_backend_sched_eval_callback(self._on_node)

    def end_pass(self) -> None:
        """A decode is done: after the first, its graphs' last weight is known. The skip
        is taken only for a weight each graph uses once (a weight shared between layers
        would otherwise stop the graph at its first use)."""
        if self._first_pass and self._seen is not None:
            self._first_pass = False
            if self._uses.get(self._seen) == self._graphs:
                self._last = self._seen

    def _on_node(self, node, ask, _user) -> bool:
        try:
            if self.error is not None or self.stop:
                return False
            t = ggml.Tensor.from_address(node)
            if ask:
                return self._wanted(t)
            name = ggml.weight_name(t.src[0].contents.name)
            if t.op == self._g.op_mul_mat_id:
                self._collect_experts(t, name)
            else:
                self._collect(t, name)
            self._seen = name
            if self._first_pass:
                self._uses[name] = self._uses.get(name, 0) + 1
            # Past the last weight only the head is left: skip it (nobody reads logits).
            return self._first_pass or name != self._last
        except BaseException as e:  # noqa: BLE001 - C cannot take it: raised after decode
            self.error = e
            return False

    def _wanted(self, t: ggml.Tensor) -> bool:
        if t.op == self._g.op_mul_mat_id:
            return True
        if t.op != self._g.op_mul_mat:
            return False
        src1 = t.src[1].contents
        if src1.ne[1] < MIN_ROWS or src1.type != ggml.TYPE_F32:
            return False
        return ggml.weight_name(t.src[0].contents.name).startswith("blk.")

    def _array(self, ptr, dtype, shape, strides):
        """A tensor's data as numpy: in place when it lives in RAM, else copied here."""
        np = self._np
        t = ptr.contents
        nbytes = self._g.nbytes(ptr)
        if self._g.buffer_is_host(t.buffer):
            buf = (ctypes.c_char * nbytes).from_address(t.data)
        else:
            if self._scratch.size < nbytes:
                self._scratch = np.empty(nbytes, dtype=np.uint8)
            self._g.tensor_get(ptr, self._scratch.ctypes.data, 0, nbytes)
            buf = self._scratch
        return np.ndarray(shape, dtype, buffer=buf, strides=strides)

    def _entry(self, name: str, n_mat: int, n_cols: int, n_counts: int):
        """A weight's accumulators: one count per expert, one for a dense weight (even a
        3-D one, as llama-imatrix keeps it)."""
        np = self._np
        sums = self.sums.get(name)
        if sums is None:
            sums = self.sums[name] = np.zeros((n_mat, n_cols), dtype=np.float64)
            self.counts[name] = np.zeros(n_counts, dtype=np.int64)
        elif sums.shape != (n_mat, n_cols):
            raise EdgechatError(f"{name} changed shape during calibration; this model is odd")
        return sums, self.counts[name]

    def _finite(self, values, name: str) -> None:
        if not self._np.isfinite(values).all():
            raise EdgechatError(
                f"the model computed non-finite activations in {name}: the file is damaged "
                "(or so quantised it overflows); calibrate a higher-precision copy"
            )

    def _collect(self, t: ggml.Tensor, name: str) -> None:
        np = self._np
        src0, p1 = t.src[0].contents, t.src[1]
        src1 = p1.contents
        ne, nb = tuple(src1.ne), tuple(src1.nb)
        x = self._array(p1, np.float32, ne[::-1], nb[::-1])  # (ne3, ne2, ne1, ne0)
        n_mat = src0.ne[2] * src0.ne[3]
        sums, counts = self._entry(name, n_mat, ne[0], 1)
        if ne[2] == ne[3] == 1:
            x2 = x[0, 0]
            add = np.einsum("ij,ij->j", x2, x2, dtype=np.float32).astype(np.float64)
            self._finite(add, name)
            sums[0] += add
        else:  # 3-D+ activations: each (i2, i3) slice to its matrix, as llama-imatrix
            per = np.einsum("abij,abij->abj", x, x, dtype=np.float32).astype(np.float64)
            self._finite(per, name)
            for i3 in range(ne[3]):
                for i2 in range(ne[2]):
                    sums[(i3 % src0.ne[3]) * src0.ne[2] + (i2 % src0.ne[2])] += per[i3, i2]
        counts += (ne[1] * ne[2] * ne[3]) // n_mat

    def _collect_experts(self, t: ggml.Tensor, name: str) -> None:
        np = self._np
        src0, p1, pids = t.src[0].contents, t.src[1], t.src[2]
        src1, ids = p1.contents, pids.contents
        n_as, n_ids, n_cols, n_tokens = src0.ne[2], ids.ne[0], src1.ne[0], src1.ne[2]
        if ids.ne[1] != n_tokens or src1.ne[3] != 1:
            raise EdgechatError(f"{name}: expert routing of an unknown shape")
        x = self._array(p1, np.float32, (n_tokens, src1.ne[1], n_cols), tuple(src1.nb[2::-1]))
        # The expert ids are small: always copied (they may not be contiguous).
        nbytes = self._g.nbytes(pids)
        raw = np.empty(nbytes, dtype=np.uint8)
        self._g.tensor_get(pids, raw.ctypes.data, 0, nbytes)
        ex = np.ndarray((n_tokens, n_ids), np.int32, buffer=raw, strides=(ids.nb[1], ids.nb[0]))
        if ex.size and (ex.min() < 0 or ex.max() >= n_as):
            raise EdgechatError(f"{name}: an expert id out of range")
        sums, counts = self._entry(name, n_as, n_cols, n_as)
        rows = x[:, np.arange(n_ids) % src1.ne[1], :].reshape(-1, n_cols)
        order = np.argsort(ex.reshape(-1), kind="stable")
        experts, starts, seen = np.unique(
            ex.reshape(-1)[order], return_index=True, return_counts=True
        )
        sq = rows[order]
        add = np.add.reduceat(sq * sq, starts, axis=0).astype(np.float64)
        self._finite(add, name)
        sums[experts] += add
        counts[experts] += seen

    def matrix(self, chunk_size: int, datasets: tuple[str, ...]) -> ImportanceMatrix:
        np = self._np
        most = max((int(c.max()) for c in self.counts.values()), default=0)
        return ImportanceMatrix(
            {k: v.astype(np.float32).reshape(-1) for k, v in self.sums.items()},
            {k: v.copy() for k, v in self.counts.items()},
            datasets,
            most // chunk_size,
            chunk_size,
        )


@contextlib.contextmanager
def _ctrl_c_to(collector: Collector):
    """While llama.cpp runs, Ctrl-C only sets a flag: a KeyboardInterrupt raised inside
    the C callback would be lost. The loop raises it between chunks instead."""
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return

    def stop(_signum, _frame) -> None:
        collector.stop = True

    signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def check_texts(texts: Sequence[str | Path]) -> None:
    """Each text file is there and readable (a missing one, a folder, a pipe: one line),
    checked before anything else is (the output, the model)."""
    from edgechat.paths import user_file

    if not texts:
        raise InputError("give a text to calibrate on (--text FILE)")
    for t in texts:
        if str(t) != "-":
            user_file(t, "text file")


def quantised_source(path: Path) -> str | None:
    """The file type of a model whose layers are quantised already (quantize wants
    --allow-requantize for it), or None for a full-precision one."""
    from edgechat.facts.gguf import inspect_file
    from edgechat.lab.quantize import full_precision

    facts = inspect_file(path)
    return None if full_precision(facts) else (facts.file_type or "quantised")


def read_texts(texts: Sequence[str | Path]) -> tuple[str, tuple[str, ...]]:
    """The calibration text (files read exactly, as llama-imatrix reads its file; strings
    taken as they are), joined by a blank line, and the names the matrix records."""
    from edgechat.tasks.documents import read_text

    if not texts:
        raise InputError("give a text to calibrate on (--text FILE)")
    parts, names = [], []
    for t in texts:
        if isinstance(t, Path):
            name, text = read_text(str(t), exact=True, purpose="calibrate on")
            names.append(str(t))
        else:
            text = t
            names.append(f"text of {len(t)} characters")
        if not text.strip():
            raise InputError(f"{names[-1]} is empty: there is nothing to calibrate on")
        parts.append(text)
    return "\n\n".join(parts), tuple(names)


def calibrate(
    plan: RunPlan,
    texts: Sequence[str | Path],
    *,
    ctx: int = 512,
    chunks: int | None = None,
    progress: Progress | None = None,
    datasets: Sequence[str] | None = None,
) -> ImportanceMatrix:
    """The importance matrix of ``plan``'s model over ``texts`` (Paths are read as files,
    strings are the text), in chunks of ``ctx`` tokens, the first ``chunks`` of them
    (all by default). ``datasets`` names the texts in the matrix (default: the paths)."""
    from edgechat.llama import backend

    lc = backend.load()
    from edgechat.llama.engine import Engine, EngineError

    if ctx < 64:
        raise InputError(f"--ctx {ctx} is too small to calibrate; use 512")
    if chunks is not None and chunks < 1:
        raise InputError("--chunks must be 1 or more")
    text, names = read_texts(texts)
    plan = replace(plan, n_ctx=ctx, n_batch=ctx, n_ubatch=min(plan.n_ubatch, ctx))
    collector = Collector(lc, graphs_per_pass=-(-ctx // plan.n_ubatch))
    engine = Engine(replace(plan, eval_callback=collector.callback))
    batch = None
    try:
        if engine.n_ctx < ctx:
            raise InputError(
                f"{plan.model_path.name} was trained for {engine.n_ctx} tokens of context; "
                f"calibrate with --ctx {engine.n_ctx} or less"
            )
        tokens = engine.tokenize(text, add_special=True)
        available = len(tokens) // ctx
        if available < 1:
            raise InputError(
                f"the text is {len(tokens)} tokens, shorter than one chunk of --ctx {ctx}: "
                "give more text (a few thousand words at least) or a smaller --ctx"
            )
        n = min(chunks, available) if chunks else available
        vocab = engine._vocab
        bos = lc.llama_vocab_bos(vocab) if lc.llama_vocab_get_add_bos(vocab) else None
        batch = lc.llama_batch_init(ctx, 0, 1)
        batch.n_tokens = ctx
        for j in range(ctx):
            batch.pos[j], batch.n_seq_id[j], batch.logits[j] = j, 1, True
            batch.seq_id[j][0] = 0
        memory = lc.llama_get_memory(engine._ctx)
        with _ctrl_c_to(collector):
            started = time.perf_counter()
            if progress:
                progress(0, n, None)
            for i in range(n):
                chunk = (lc.llama_token * ctx)(*tokens[i * ctx : (i + 1) * ctx])
                if bos is not None:
                    chunk[0] = bos
                ctypes.memmove(batch.token, chunk, ctypes.sizeof(chunk))
                lc.llama_memory_clear(memory, True)
                rc = lc.llama_decode(engine._ctx, batch)
                collector.end_pass()
                if collector.stop:
                    raise KeyboardInterrupt
                if collector.error is not None:
                    raise collector.error
                if rc != 0:
                    raise EngineError(f"llama.cpp could not evaluate chunk {i + 1} (code {rc})")
                if progress:
                    spent = time.perf_counter() - started
                    progress(i + 1, n, spent / (i + 1) * (n - i - 1))
    finally:
        if batch is not None:
            lc.llama_batch_free(batch)
        engine.close()
    if not collector.sums:
        raise EdgechatError(
            f"{plan.model_path.name} showed no weights to calibrate (no blk.* matrix products)"
        )
    return collector.matrix(ctx, tuple(datasets) if datasets else names)
