"""The llama.cpp engine: load a RunPlan, stream chat replies, and measure them.

It drives llama.cpp's C API directly (decode one token, sample it with llama.cpp's
own sampler chain) rather than llama-cpp-python's ``Llama`` class: the high-level
stream reaches only 78-90 % of llama-bench on small models, this loop matches the
bare C API (see ``benchmarks/generation.py``). It also keeps the KV cache between
turns, so a follow-up only evaluates the new tokens.

Import cost: ``llama_cpp`` is imported when an engine is loaded, never at start-up.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace

from edgechat.errors import ContextOverflow, EdgechatError, ModelLoadError
from edgechat.llama import backend
from edgechat.llama.backend import LOG
from edgechat.llama.cache import keep_prefix
from edgechat.llama.contract import reply_reserve
from edgechat.llama.kernelcheck import kernels_for
from edgechat.llama.params import check_plan, context_params, model_params
from edgechat.llama.pieces import Detokenizer
from edgechat.llama.prompts import Message, Prompts
from edgechat.llama.reply import Reply, Stats
from edgechat.llama.scoring import check_finite
from edgechat.llama.vocab import Vocab

__all__ = ["LOG", "Engine", "EngineError", "Reply", "Stats"]  # what callers import from here
from edgechat.llama.sampling import Sampler, use_backend
from edgechat.planning.plan import RunPlan, Sampling
from edgechat.planning.threads import LoadSample, default_threads


class EngineError(EdgechatError):
    """llama.cpp failed while running a model that had loaded."""


def _llama():
    """llama_cpp, its libraries loaded once (before numpy) with the log routed to LOG."""
    return backend.load()


class Engine:
    """One loaded model and its context (a ``ChatEngine``, see llama/contract.py).
    Not thread-safe, except ``cancel()``."""

    is_local = True
    where = "this machine"

    def __init__(self, plan: RunPlan, *, verbose=False, backend_sampling=None, say=None) -> None:
        """``backend_sampling``: sample inside the graph (see llama/sampling.py); None:
        when every layer is on the GPU (or as EDGECHAT_BACKEND_SAMPLING says). ``say``
        hears the one line about CPU kernels a check left out (llama/kernelcheck.py)."""
        sample, asked = (None if plan.n_threads else LoadSample()), plan  # busy over the load
        plan = plan.resolved()
        check_plan(plan)
        lc = _llama()
        self._lc = lc
        LOG.verbose = verbose
        self._cancel = threading.Event()
        self.last_stats: Stats | None = None
        self.expected_tps: float | None = None  # the speed estimate, set by service.load
        self.backend_sampling = backend_sampling
        self.last_backend_sampling = False  # whether the last reply sampled in the graph
        self.on_prompt = None  # hears (evaluated, to evaluate) after each prompt batch
        self._model = self._ctx = self.vocab = None
        self.kernels = kernels_for(lc, plan.cpu_kernels, say)  # checked once per build and CPU
        t0 = time.perf_counter()
        mark = LOG.mark()
        mparams, _keep = model_params(lc, plan, self.kernels.names)
        self._model = lc.llama_model_load_from_file(str(plan.model_path).encode(), mparams)
        if not self._model:
            why = LOG.first_error_since(mark) or "llama.cpp could not read it"
            raise ModelLoadError(
                f"cannot load {plan.model_path.name}: {why}. The file may be truncated or "
                "from a newer llama.cpp; download it again or update llama-cpp-python"
            )
        self.vocab = Vocab(lc, self._model)
        self._vocab = self.vocab.ptr
        n_ctx_train = lc.llama_model_n_ctx_train(self._model)
        self.threads = default_threads(sample) if sample else None  # ThreadChoice
        plan = asked.resolved(self.threads)
        if n_ctx_train > 0 and plan.n_ctx > n_ctx_train:
            # Beyond its trained context a model degrades into nonsense: cap it.
            plan = replace(plan, n_ctx=n_ctx_train).resolved()

        cparams = context_params(lc, plan)
        self._ctx = lc.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            why = LOG.first_error_since(mark) or "out of memory?"
            self.close()
            raise ModelLoadError(
                f"cannot create a context of {plan.n_ctx} tokens: {why}. Try a smaller --ctx"
            )
        self.load_s = time.perf_counter() - t0
        self.plan = plan
        self.n_seq = lc.llama_n_seq_max(self._ctx)
        self.n_ctx = lc.llama_n_ctx_seq(self._ctx)  # each sequence's own cache
        self.n_ctx_train = n_ctx_train
        self._n_swa = lc.llama_model_n_swa(self._model)
        self._kv_tokens: list[int] = []  # what the KV cache holds, position by position
        template = lc.llama_model_chat_template(self._model, None)
        self._prompts = Prompts(
            template or None,  # bytes: Prompts says when they are not UTF-8
            self.meta("general.architecture") or "",
            self.vocab.bos_text(),
            self.vocab.eos_text(),
            self.tokenize,
            self.vocab.longest if self.vocab.keeps_text else None,
        )

    # -- lifecycle ---------------------------------------------------------------

    def close(self) -> None:
        lc = self._lc
        if self.vocab is not None:
            self.vocab.close()
        if self._ctx:
            lc.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            lc.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - depends on GC timing
        with contextlib.suppress(Exception):
            self.close()

    # -- facts -------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(4096)
        n = self._lc.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace") if n >= 0 else None

    @property
    def n_ctx_used(self) -> int:
        """Tokens the context holds now (the cached conversation)."""
        return len(self._kv_tokens)

    def info(self) -> dict:
        lc = self._lc
        desc = ctypes.create_string_buffer(256)
        lc.llama_model_desc(self._model, desc, len(desc))
        return {
            "path": str(self.plan.model_path),
            "name": self.meta("general.name") or self.plan.model_path.stem,
            "architecture": self.meta("general.architecture"),
            "description": desc.value.decode("utf-8", "replace"),
            "n_params": lc.llama_model_n_params(self._model),
            "size_bytes": lc.llama_model_size(self._model),
            "n_ctx_train": self.n_ctx_train,
            "n_ctx": self.n_ctx,
            "n_seq": self.n_seq,
            "n_vocab": lc.llama_vocab_n_tokens(self._vocab),
            "chat_template": self._prompts.has_template,
            "chat_template_problem": self._prompts.problem,  # and the family format serves
            "tool_shape": self._prompts.tool_shape,  # None: its template takes no tools
            "thinking": self._prompts.thinking,
            "gpu_offload_supported": bool(lc.llama_supports_gpu_offload()),
            "n_gpu_layers": self.plan.n_gpu_layers,
            "n_threads": self.plan.n_threads,
            "threads_why": self.threads.why if self.threads else "set by --threads",
            "cpu_kernels": self.kernels.title,
            "cpu_kernels_why": self.kernels.why,
        }

    # -- tokens ------------------------------------------------------------------

    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = False
    ) -> list[int]:
        return self.vocab.tokenize(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.vocab.detokenize(tokens)

    # -- prompts -----------------------------------------------------------------

    def format_chat(self, messages: Sequence[Message]) -> str:
        """The prompt text, rendered with the model's own chat template."""
        return self._prompts.format(messages)

    def prompt_tokens(self, messages: Sequence[Message]) -> list[int]:
        return self._prompts.tokens(messages)

    def fit(
        self, messages: Sequence[Message], reserve: int
    ) -> tuple[list[Message], int, list[int]]:
        """Drop the oldest turns until the prompt and ``reserve`` fit (see Prompts.fit)."""
        return self._prompts.fit(messages, reserve, self.n_ctx)

    # -- generation --------------------------------------------------------------

    @property
    def all_on_gpu(self) -> bool:
        """Every layer and the output head offloaded, on a build that can."""
        lc = self._lc
        n_layer = lc.llama_model_n_layer(self._model)
        return self.plan.n_gpu_layers > n_layer and bool(lc.llama_supports_gpu_offload())

    def _backend_sampling(self, sampling: Sampling) -> bool:
        return use_backend(self.backend_sampling, self.all_on_gpu, sampling)

    def cancel(self) -> None:
        """Stop the reply in progress after the current token. Safe from any thread."""
        self._cancel.set()

    def chat(
        self,
        messages: Sequence[Message],
        sampling: Sampling | None = None,
        *,
        drop_oldest: bool = True,
    ) -> Reply:
        """Stream the assistant's reply to ``messages``.

        With ``drop_oldest`` the oldest turns make way when the context is full
        (``Reply.dropped`` says how many); otherwise an overflow raises ContextOverflow.
        """
        sampling = sampling or Sampling()
        self._cancel.clear()
        t_request = time.perf_counter()
        tokens, dropped = self.chat_tokens(messages, sampling, drop_oldest)
        return Reply(self._generate(tokens, sampling, t_request, dropped), self, dropped)

    def chat_tokens(
        self, messages, sampling: Sampling, drop_oldest, n_ctx=0, cancel=None, **render
    ) -> tuple[list[int], int]:
        """The prompt of a chat reply with room for it in ``n_ctx`` (0, or more: the context;
        ``render``: see Prompts.tokens), and how many of the oldest turns made way for it."""
        n_ctx = min(n_ctx or self.n_ctx, self.n_ctx)
        reserve = reply_reserve(sampling.max_tokens, n_ctx)
        if drop_oldest:
            _, dropped, tokens = self._prompts.fit(messages, reserve, n_ctx, cancel, **render)
            return tokens, dropped
        whole = self._prompts.whole  # every message, or ContextOverflow
        return whole(messages, reserve, n_ctx, self.n_ctx_train, cancel, **render), 0

    def completion_tokens(self, prompt: str, sampling: Sampling, n_ctx: int = 0) -> list[int]:
        """Raw ``prompt`` text as tokens (no chat template), when it leaves room for a reply."""
        n = min(n_ctx or self.n_ctx, self.n_ctx)
        self._prompts.check_size(prompt, reply_reserve(sampling.max_tokens, n), n)
        tokens = self.tokenize(prompt, add_special=True, parse_special=False)
        self._check_room(tokens, sampling, "the prompt", "the answer", "", n_ctx)
        return tokens

    def complete(self, prompt: str, sampling: Sampling | None = None) -> Reply:
        """Stream the continuation of raw ``prompt`` text (no chat template), as OpenAI's
        ``/v1/completions`` asks; ContextOverflow when it leaves no room for a reply."""
        sampling = sampling or Sampling()
        self._cancel.clear()
        t_request = time.perf_counter()
        tokens = self.completion_tokens(prompt, sampling)
        return Reply(self._generate(tokens, sampling, t_request, 0), self, 0)

    def continue_reply(
        self, messages: Sequence[Message], partial: str, sampling: Sampling | None = None
    ) -> Reply:
        """Stream more of an assistant reply that ended early (stopped, or cut by the
        token cap): the prompt is the chat up to it, then the partial reply, left open."""
        sampling = sampling or Sampling()
        self._cancel.clear()
        t_request = time.perf_counter()
        tokens = self._prompts.continued(messages, partial)
        self._check_room(tokens, sampling, "the chat", "more of the reply", "; start a new chat")
        return Reply(self._generate(tokens, sampling, t_request, 0), self, 0)

    def _check_room(self, tokens, sampling, what, room, advice, n_ctx: int = 0) -> None:
        """Raise ContextOverflow unless ``tokens`` leave room for a reply; no old turns
        to drop here."""
        n_ctx = min(n_ctx or self.n_ctx, self.n_ctx)
        reserve = reply_reserve(sampling.max_tokens, n_ctx)
        if len(tokens) + reserve > n_ctx:
            raise ContextOverflow(
                f"{what} is {len(tokens)} tokens, and with {reserve} kept for {room} "
                f"it does not fit the {n_ctx}-token context{advice}"
            )

    n_vocab = property(lambda self: self.vocab.n_tokens)

    def logits(self, tokens: Sequence[int], first: int = 0):
        """Raw next-token logits at positions ``first`` .. end of a fresh sequence (a
        numpy array; see llama/scoring.py). The cache is cleared before and after."""
        from edgechat.llama.scoring import logits

        return logits(self, tokens, first)

    def clear_cache(self) -> None:
        """Forget every cached token: the next reply evaluates its whole prompt."""
        self._lc.llama_memory_clear(self._lc.llama_get_memory(self._ctx), True)
        self._kv_tokens.clear()

    def _generate(
        self, tokens: list[int], sampling: Sampling, t_request: float, dropped: int
    ) -> Iterator[str]:
        lc = self._lc
        ctx, vocab = self._ctx, self._vocab
        cancel = self._cancel
        n_ctx = self.n_ctx
        kv = self._kv_tokens
        finish = "stop"
        n_gen = 0
        todo: list[int] = []
        t0 = t_first = t_last = time.perf_counter()
        prompt_s = 0.0
        backend = self._backend_sampling(sampling)
        sampler = Sampler(lc, ctx, vocab, sampling, backend, words=self.vocab)
        self.last_backend_sampling = sampler.backend
        try:
            # Prompt: evaluate what the cache does not already hold, a batch at a time.
            n_cached = keep_prefix(self, 0, kv, tokens)
            todo = tokens[n_cached:]
            step = self.plan.n_batch
            for i in range(0, len(todo), step):
                if cancel.is_set():
                    finish = "cancelled"
                    return
                chunk = todo[i : i + step]
                arr = (lc.llama_token * len(chunk))(*chunk)
                rc = lc.llama_decode(ctx, lc.llama_batch_get_one(arr, len(chunk)))
                if rc != 0:
                    self.clear_cache()  # the cache is in an unknown state: start clean
                    raise EngineError(f"llama.cpp could not evaluate the prompt (code {rc})")
                kv.extend(chunk)
                if self.on_prompt is not None:  # a long prompt's progress (a summary's bar)
                    self.on_prompt(i + len(chunk), len(todo))
            prompt_s = time.perf_counter() - t0
            if todo and not sampler.backend:  # NaN scores would sample garbage: an empty
                # reply, exit 0. With backend sampling the CPU row holds no scores to check.
                check_finite(lc.llama_get_logits_ith(ctx, -1), self.n_vocab, EngineError)

            # The hot loop: locals only, one decode and one native sample per token.
            sample = sampler.next
            is_eog = lc.llama_vocab_is_eog
            decode = lc.llama_decode
            get_one = lc.llama_batch_get_one
            one = (lc.llama_token * 1)()
            text_of = Detokenizer(self.vocab)
            max_tokens = sampling.max_tokens
            while True:
                tok = sample()
                if is_eog(vocab, tok):
                    break
                text = text_of(tok)
                n_gen += 1
                t_last = time.perf_counter()
                if n_gen == 1:
                    t_first = t_last
                if text:
                    yield text
                if n_gen >= max_tokens:
                    finish = "length"
                    break
                if len(kv) >= n_ctx:
                    finish = "context"
                    break
                if cancel.is_set():
                    finish = "cancelled"
                    break
                one[0] = tok
                rc = decode(ctx, get_one(one, 1))
                if rc != 0:
                    self.clear_cache()
                    raise EngineError(f"llama.cpp failed while generating (code {rc})")
                kv.append(tok)
            tail = text_of.flush()
            if tail:
                yield tail
        except (GeneratorExit, KeyboardInterrupt):
            finish = "cancelled"  # the reader stopped listening, or Ctrl-C
            raise
        finally:
            sampler.close()
            self.last_stats = Stats(
                load_s=self.load_s,
                prompt_tokens=len(tokens),
                prompt_eval_tokens=len(todo),
                prompt_s=prompt_s or (time.perf_counter() - t0),
                gen_tokens=n_gen,
                gen_s=t_last - t_first,
                ttft_s=(t_first - t_request) if n_gen else 0.0,
                n_ctx_used=len(kv),
                n_ctx=n_ctx,
                finish=finish,
                dropped_messages=dropped,
                threads=self.plan.n_threads,
            )
