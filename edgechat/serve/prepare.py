"""A request's prompt, built on the worker's prompt thread (serve/worker.py) before it
waits for a slot: the chat rendered and tokenized (old turns dropped to fit where the
API drops them), the tokens a client sent itself (Ollama's ``context``) checked against
the vocabulary, and what the request may cost held to its context.

Every check here answers before the request reaches llama.cpp: a token id outside the
vocabulary would fail the decode that holds it, and with it every reply of that step;
a repeat window of 2^31 tokens would ask llama.cpp for gigabytes for one request.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from edgechat.errors import ContextOverflow, EdgechatError
from edgechat.planning.plan import Sampling
from edgechat.serve.protocol import ApiError

if TYPE_CHECKING:
    from edgechat.serve.worker import Job


def check_tokens(tokens: list[int], n_vocab: int, n_ctx: int, what: str) -> None:
    """Refuse (400) tokens a client sent that the model does not have, or more of
    them than its context holds."""
    if len(tokens) > n_ctx:
        raise ApiError(
            400,
            f"{what} holds {len(tokens)} tokens, more than the {n_ctx}-token context",
            "invalid_tokens",
            what,
        )
    bad = next((t for t in tokens if not 0 <= t < n_vocab), None)
    if bad is not None:
        raise ApiError(
            400,
            f"{what} holds {bad}, which is not a token of this model (0 to {n_vocab - 1})",
            "invalid_tokens",
            what,
        )


def bounded(sampling: Sampling, n_ctx: int) -> Sampling:
    """``sampling`` with what it costs held to the context: a repeat window longer than
    the context sees no more tokens than one as long as it (and llama.cpp keeps a
    buffer of that many tokens for each reply)."""
    if sampling.repeat_last_n > n_ctx or sampling.repeat_last_n < 0:
        return replace(sampling, repeat_last_n=n_ctx)
    return sampling


def build_prompt(engine, job: Job) -> tuple[list[int], Sampling, int]:
    """The job's prompt as tokens that leave room for the reply, its sampling held to
    its context, and how many old turns made way. Raises ContextOverflow when it cannot
    fit, ApiError or EdgechatError for a request that is wrong."""
    n_ctx = min(job.n_ctx or engine.n_ctx, engine.n_ctx)
    sampling = bounded(job.sampling, n_ctx)
    if job.prefix:
        check_tokens(job.prefix, engine.n_vocab, n_ctx, "context")
    if job.messages is not None:
        render: dict = {"prefill": job.prefill}  # what the template takes besides the chat
        if job.tools:
            render["tools"] = job.tools
        if job.think is not None:
            render["enable_thinking"] = job.think
        tokens, dropped = engine.chat_tokens(
            job.messages, sampling, job.drop_oldest, n_ctx, job.cancelled, **render
        )
    else:
        tokens, dropped = engine.completion_tokens(job.prompt or "", sampling, n_ctx), 0
    if job.prefix:  # the conversation so far, then this turn (without a second BOS)
        bos = engine._lc.llama_vocab_bos(engine._vocab)
        tokens = [*job.prefix, *(tokens[1:] if tokens[:1] == [bos] else tokens)]
        engine._check_room(tokens, sampling, "the context and prompt", "the answer", "", n_ctx)
    if not tokens:
        raise EdgechatError("the prompt is empty: give some text to continue")
    return tokens, sampling, dropped


class Preparing:
    """The worker's prompt thread (serve/worker.py's ``LlamaWorker`` has it): each queued
    request's prompt built once, off the llama thread, while the model is loaded."""

    def _prepare(self) -> None:
        """Build each queued request's prompt, oldest first, and hand it to the llama
        thread; a request whose prompt is refused ends here with its error."""
        while True:
            with self._cond:
                while not ((self._preparing and self.loaded) or self._stopping):
                    self._prep.wait()
                if self._stopping:
                    return
                job = self._building = self._preparing.popleft()
            error = None
            if not job.cancelled.is_set() and job.embed is None:  # embeddings: no prompt
                try:
                    job.tokens, job.sampling, job.dropped = build_prompt(self.engine, job)
                except ContextOverflow as exc:
                    error = ApiError(413, str(exc), "context_length_exceeded")
                except ApiError as exc:
                    error = exc
                except EdgechatError as exc:
                    error = ApiError(400, str(exc), "invalid_request")
                except Exception as exc:  # a bug must fail one request, not the server
                    with self._cond:
                        self._building = None
                    self._internal(job, exc)
                    continue
            with self._cond:
                self._building = None
                if self._stopping:
                    error = ApiError(503, "the server is shutting down", "shutting_down")
                elif job.cancelled.is_set():  # its client left (a render it stopped says so)
                    error = None
                elif error is None:
                    self._waiting.append(job)
                    self._cond.notify()
                    continue
                self.counts["cancelled" if error is None else "failed"] += 1
            job.failed = error is not None
            job.emit(("error", error) if error else ("end", "cancelled", None))
