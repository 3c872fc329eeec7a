"""A remote engine over Ollama's own API (an Ollama server, or ``edgechat serve``'s
Ollama side), through the official ``ollama`` client.

Ollama also answers OpenAI's API, but only its own says the model's context (``num_ctx``
in /api/show, ``context_length`` in /api/ps) and takes one per request, and only its
own counts the prompt tokens it evaluated. Everything else (the estimated token counts,
dropping the oldest turns, Reply and Stats) is the OpenAI remote engine's; this class
only talks to the server differently. ``remote.open_remote`` picks it when a bare
address (``http://HOST:11434``) answers Ollama's /api/version.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from edgechat.errors import ContextOverflow, EdgechatError
from edgechat.limits import RANDOM_SEED
from edgechat.llama.remote import DEFAULT_CTX, EstimatedPrompts, RemoteEngine, base_url
from edgechat.llama.remote_http import (
    BadReply,
    check_url,
    explain,
    options,
    positive_int,
    shown,
)
from edgechat.llama.remote_stream import Relay, relay
from edgechat.llama.reply import Stats
from edgechat.planning.plan import Sampling


def _num_ctx(parameters) -> int | None:
    """``num_ctx`` from /api/show's parameters text (``num_ctx    4096`` lines)."""
    for line in (parameters if isinstance(parameters, str) else "").splitlines():
        key, _, value = line.partition(" ")
        if key == "num_ctx" and value.strip().isdigit():
            return positive_int(int(value.strip()))
    return None


class OllamaEngine(RemoteEngine):
    """A model on an Ollama server (a ``ChatEngine``). ``cancel()`` is safe from any thread."""

    api = "ollama"

    def __init__(  # noqa: D107 - the OpenAI engine's setup does not apply: no super()
        self, url: str, model: str | None = None, api_key: str | None = None
    ) -> None:
        try:
            import ollama
        except ImportError:
            raise EdgechatError(
                "an Ollama server needs the ollama package: pip install 'edgechat[remote]'"
            ) from None
        self._ollama = ollama
        self.url = base_url(url).removesuffix("/v1")
        self.where = check_url(self.url)[1]
        t0 = time.perf_counter()
        self._client = ollama.Client(host=self.url, **options(self.where, api_key))
        self._http = self._client._client  # the httpx client, closed with the engine
        try:
            listed = [m.model for m in self._client.list().models if isinstance(m.model, str)]
            running = {m.model: positive_int(m.context_length) for m in self._client.ps().models}
        except Exception as exc:
            self._http.close()
            raise self._explain(exc) from None
        if not listed:
            self._http.close()
            raise EdgechatError(f"the Ollama server at {self.where} has no models; pull one there")
        names = {n: n for n in listed} | {n.removesuffix(":latest"): n for n in listed}
        if model is not None and model not in names:
            self._http.close()
            raise EdgechatError(
                f"the server at {self.where} has no model '{shown(model)}'; it has: "
                + shown(", ".join(listed))
            )
        self.model = (
            names[model] if model else next(iter(n for n in running if n in names), listed[0])
        )
        try:
            shown_ctx = _num_ctx(self._client.show(self.model).parameters)
        except Exception as exc:
            self._http.close()
            raise self._explain(exc) from None
        known = shown_ctx or running.get(self.model)
        self.n_ctx = known or DEFAULT_CTX  # sent with every request, so it is the one
        self.n_ctx_known = bool(known)
        self.models = listed
        self.load_s = time.perf_counter() - t0
        self.last_stats: Stats | None = None
        self.n_ctx_used = 0
        self._cancel = threading.Event()
        self._prompts = EstimatedPrompts()

    def _explain(self, exc) -> EdgechatError:
        if isinstance(exc, self._ollama.ResponseError):
            if exc.status_code in (401, 403):
                return self._refused_key()
            error = shown(exc.error)
            if "context" in error.lower():
                return ContextOverflow(f"the server says the text is too long: {error}")
            return EdgechatError(f"the server at {self.where} answered: {error}")
        said = explain(exc, self.where)
        if said is not None:
            return said
        raise exc

    def info(self) -> dict:
        return {**super().info(), "api": self.api}

    def _stream(self, what: dict, s: Sampling, estimate: int, dropped: int) -> Iterator[str]:
        options = {
            "num_ctx": self.n_ctx,
            "num_predict": s.max_tokens,
            "temperature": s.temperature,
            "top_k": s.top_k,
            "top_p": s.top_p,
            "min_p": s.min_p,
            "repeat_penalty": s.repeat_penalty,
            "repeat_last_n": s.repeat_last_n,
        }
        if s.seed != RANDOM_SEED:
            options["seed"] = s.seed
        chat = "messages" in what
        last = None  # the closing part: the server's counts and times

        def start():
            if chat:
                return self._client.chat(
                    self.model, messages=what["messages"], options=options, stream=True
                )
            return self._client.generate(
                self.model, what["prompt"], raw=True, options=options, stream=True
            )

        def pieces(stream) -> Iterator[tuple[str | None, str | None]]:
            nonlocal last
            for part in stream:
                text = part.message.content if chat else part.response
                if not isinstance(text, str | None):
                    raise BadReply(f"the server at {self.where} sent a part of the wrong shape")
                if part.done:
                    last = part
                    yield text, "length" if part.done_reason == "length" else "stop"
                else:
                    yield text, None

        run = Relay()
        try:
            yield from relay(self, start, pieces, run)
        finally:
            self._record(last, estimate, run, dropped)

    def _record(self, last, estimate: int, run: Relay, dropped: int) -> None:
        """The reply's Stats: the server's own counts and times where it sent them."""
        evaluated = positive_int(getattr(last, "prompt_eval_count", None)) or estimate
        gen = positive_int(getattr(last, "eval_count", None)) or run.n_chunks
        prompt = max(estimate, evaluated)  # the API counts only what it evaluated
        self.n_ctx_used = prompt + gen
        self.last_stats = Stats(
            load_s=self.load_s,
            prompt_tokens=prompt,
            prompt_eval_tokens=evaluated,
            prompt_s=_seconds(last, "prompt_eval_duration", run.t_first - run.t0),
            gen_tokens=gen,
            gen_s=_seconds(last, "eval_duration", run.t_last - run.t_first),
            ttft_s=run.ttft(),
            n_ctx_used=self.n_ctx_used,
            n_ctx=self.n_ctx,
            finish=run.ended,
            dropped_messages=dropped,
        )


def _seconds(last, field: str, measured: float) -> float:
    """A duration the server sent (nanoseconds), else the one measured here."""
    value = positive_int(getattr(last, field, None), 1 << 62)
    return value / 1e9 if value else measured
