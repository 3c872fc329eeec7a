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
from edgechat.llama.reply import Stats
from edgechat.planning.plan import Sampling


def _num_ctx(parameters: str | None) -> int | None:
    """``num_ctx`` from /api/show's parameters text (``num_ctx    4096`` lines)."""
    for line in (parameters or "").splitlines():
        key, _, value = line.partition(" ")
        if key == "num_ctx" and value.strip().isdigit():
            return int(value.strip())
    return None


class OllamaEngine(RemoteEngine):
    """A model on an Ollama server (a ``ChatEngine``). ``cancel()`` is safe from any thread."""

    api = "ollama"

    def __init__(  # noqa: D107 - the OpenAI engine's setup does not apply: no super()
        self, url: str, model: str | None = None, api_key: str | None = None, timeout: float = 600
    ) -> None:
        try:
            import ollama
        except ImportError:
            raise EdgechatError(
                "an Ollama server needs the ollama package: pip install 'edgechat[remote]'"
            ) from None
        self._ollama = ollama
        self.url = base_url(url).removesuffix("/v1")
        self.where = self.url.split("://", 1)[1]
        t0 = time.perf_counter()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self._client = ollama.Client(host=self.url, timeout=timeout, headers=headers)
        try:
            listed = [m.model for m in self._client.list().models]
            running = {m.model: m.context_length for m in self._client.ps().models}
        except Exception as exc:
            raise self._explain(exc) from None
        if not listed:
            raise EdgechatError(f"the Ollama server at {self.url} has no models; pull one there")
        names = {n: n for n in listed} | {n.removesuffix(":latest"): n for n in listed}
        if model is not None and model not in names:
            raise EdgechatError(
                f"the server at {self.url} has no model {model!r}; it has: {', '.join(listed)}"
            )
        self.model = names[model] if model else next(iter(running), listed[0])
        try:
            shown = _num_ctx(self._client.show(self.model).parameters)
        except Exception as exc:
            raise self._explain(exc) from None
        known = shown or running.get(self.model)
        self.n_ctx = int(known or DEFAULT_CTX)  # sent with every request, so it is the one
        self.n_ctx_known = bool(known)
        self.models = listed
        self.load_s = time.perf_counter() - t0
        self.last_stats: Stats | None = None
        self.n_ctx_used = 0
        self._cancel = threading.Event()
        self._prompts = EstimatedPrompts()

    def _explain(self, exc) -> EdgechatError:
        if isinstance(exc, ConnectionError):
            return EdgechatError(f"cannot reach {self.url}: is the server running there?")
        if isinstance(exc, self._ollama.ResponseError):
            if exc.status_code == 401:
                return EdgechatError(
                    f"the server at {self.where} refused the API key; give the right one with "
                    "--api-key or EDGECHAT_API_KEY"
                )
            if "context" in exc.error.lower():
                return ContextOverflow(f"the server says the text is too long: {exc.error}")
            return EdgechatError(f"the server at {self.where} answered: {exc.error}")
        return EdgechatError(f"the server at {self.where} failed: {exc}")

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
        t0 = t_first = t_last = time.perf_counter()
        n_chunks, finish, last = 0, "cancelled", None
        stream = None
        try:
            try:
                if chat:
                    stream = self._client.chat(
                        self.model, messages=what["messages"], options=options, stream=True
                    )
                else:
                    stream = self._client.generate(
                        self.model, what["prompt"], raw=True, options=options, stream=True
                    )
                for part in stream:
                    text = part.message.content if chat else part.response
                    if text:
                        n_chunks += 1
                        t_last = time.perf_counter()
                        if n_chunks == 1:
                            t_first = t_last
                        yield text
                    if part.done:
                        last = part
                        finish = "length" if part.done_reason == "length" else "stop"
                    if self._cancel.is_set():
                        finish = "cancelled"
                        break
            except (ConnectionError, self._ollama.ResponseError) as exc:
                raise self._explain(exc) from None
        finally:
            if stream is not None:
                stream.close()
            self._record(last, estimate, n_chunks, t0, t_first, t_last, finish, dropped)

    def _record(self, last, estimate, n_chunks, t0, t_first, t_last, finish, dropped) -> None:
        """The reply's Stats: the server's own counts and times where it sent them."""
        evaluated = last.prompt_eval_count if last and last.prompt_eval_count else estimate
        gen = last.eval_count if last and last.eval_count else n_chunks
        prompt = max(estimate, evaluated)  # the API counts only what it evaluated
        self.n_ctx_used = prompt + gen
        self.last_stats = Stats(
            load_s=self.load_s,
            prompt_tokens=prompt,
            prompt_eval_tokens=evaluated,
            prompt_s=(last.prompt_eval_duration or 0) / 1e9 if last else t_first - t0,
            gen_tokens=gen,
            gen_s=(last.eval_duration or 0) / 1e9 if last else t_last - t_first,
            ttft_s=(t_first - t0) if n_chunks else 0.0,
            n_ctx_used=self.n_ctx_used,
            n_ctx=self.n_ctx,
            finish=finish,
            dropped_messages=dropped,
        )
