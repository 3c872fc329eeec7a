"""A remote engine: the conversation runs on an OpenAI-compatible server (edgechat serve,
llama-server, Ollama, vLLM, LM Studio) through the official ``openai`` client; an
Ollama server named by its bare address is spoken to in its own API
(``remote_ollama.py``, chosen by ``open_remote``).

It offers what the plain chat, the app and the summariser use from ``Engine``: ``chat``
streaming a reply with its ``Stats``, ``info``, ``n_ctx``, ``cancel``, and token counts.
The API has no tokenizer, so counts are a cautious estimate (about three characters
per token, one per non-ASCII character), enough to chunk documents and to drop the
oldest turns before the server would refuse them. ``openai`` is imported only when a
remote engine is made: nothing that is not remote opens a socket.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

from edgechat.errors import ContextOverflow, EdgechatError
from edgechat.limits import RANDOM_SEED
from edgechat.llama.contract import reply_reserve
from edgechat.llama.prompts import Message, Prompts
from edgechat.llama.remote_http import (
    BadReply,
    ReplyCut,
    check_url,
    explain,
    options,
    positive_int,
    shown,
    timeout,
)
from edgechat.llama.remote_stream import Relay, relay
from edgechat.llama.reply import Reply, Stats
from edgechat.planning.plan import Sampling

PROBE_TIMEOUT_S = 5.0  # a server that does not answer /api/version at once is not Ollama
DEFAULT_CTX = 4096  # when the server does not say (OpenAI's model list has no field for it)
_PER_MESSAGE = 8  # role markers and separators a chat template adds


def base_url(url: str) -> str:
    """``http://host:port`` becomes ``http://host:port/v1``; a path given is kept. An
    address that is not one (``not a url``, ``http://[::1``) is refused (remote_http.py)."""
    scheme, where, path = check_url(url)
    return f"{scheme}://{where}{path or '/v1'}"


def estimate_tokens(text: str) -> list[str]:
    """Pseudo-tokens: runs of up to three ASCII characters, or one other character.
    Real tokenizers average more characters per token, so counts come out high."""
    out: list[str] = []
    run = ""
    for ch in text:
        if ch.isascii():
            run += ch
            if len(run) == 3:
                out.append(run)
                run = ""
        else:
            if run:
                out.append(run)
                run = ""
            out.append(ch)
    if run:
        out.append(run)
    return out


class EstimatedPrompts(Prompts):
    """The shared prompt policy (drop the oldest turns, or refuse) over estimated counts:
    the server formats the prompt, and the API has no tokenizer."""

    def __init__(self) -> None:  # no template or tokenizer here: the server has them
        self.has_template = True

    def tokens(self, messages: Sequence[Message], seconds=None, cancel=None) -> list[str]:
        out: list[str] = []
        for m in messages:
            out += ["<m>"] * _PER_MESSAGE + estimate_tokens(m.get("content") or "")
        return out

    def measure(self, message: Message, cap: int) -> int:
        return len(self.tokens([message]))


class RemoteEngine:
    """A model on another machine, reached over HTTP (a ``ChatEngine``, see
    llama/contract.py). ``cancel()`` is safe from any thread."""

    is_local = False

    def __init__(self, url: str, model: str | None = None, api_key: str | None = None) -> None:
        try:
            import httpx
            import openai
        except ImportError:
            raise EdgechatError(
                "a remote model needs the openai package: pip install 'edgechat[remote]'"
            ) from None
        self._openai = openai
        self.url = base_url(url)
        self.where = check_url(self.url)[1]  # the one host the text goes to: no redirects
        t0 = time.perf_counter()
        self._http = httpx.Client(**options(self.where, api_key))
        self._client = openai.OpenAI(
            base_url=self.url,
            api_key=api_key or "none",
            timeout=timeout(),
            max_retries=0,
            http_client=self._http,
        )
        try:
            listed = self._models()
        except Exception as exc:
            self._http.close()
            raise self._explain(exc) from None
        ids = list(listed)
        if model is not None and model not in ids:
            self._http.close()
            raise EdgechatError(
                f"the server at {self.where} has no model '{shown(model)}'; it has: "
                + shown(", ".join(ids))
            )
        self.model = model or ids[0]
        meta = listed[self.model]
        known = positive_int(meta.get("n_ctx")) or positive_int(meta.get("n_ctx_train"))
        self.n_ctx = known or DEFAULT_CTX
        self.n_ctx_known = known is not None
        self.models = ids
        self.load_s = time.perf_counter() - t0
        self.last_stats: Stats | None = None
        self.n_ctx_used = 0
        self._cancel = threading.Event()
        self._prompts = EstimatedPrompts()

    def _models(self) -> dict[str, dict]:
        """The server's models (``GET /models``): id -> its ``meta`` (llama.cpp's servers
        and edgechat's say the context there), each checked: it is a stranger's JSON."""
        reply = self._http.get(self.url + "/models")
        if reply.status_code in (401, 403):
            raise self._refused_key()
        if reply.status_code == 404:
            raise EdgechatError(
                f"{self.url} does not answer as an OpenAI-compatible API; give its /v1 address"
            )
        if reply.status_code >= 400:
            raise EdgechatError(
                f"the server at {self.where} answered {reply.status_code}: {shown(reply.text)}"
            )
        data = reply.json()
        entries = data.get("data") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise BadReply(f"the server at {self.where} sent no list of models ({shown(data, 80)})")
        out: dict[str, dict] = {}
        for entry in entries:
            if isinstance(entry, dict) and isinstance(entry.get("id"), str) and entry["id"]:
                meta = entry.get("meta")
                out.setdefault(entry["id"], meta if isinstance(meta, dict) else {})
        if not out:
            raise EdgechatError(f"the server at {self.where} lists no models")
        return out

    # -- errors --------------------------------------------------------------------------

    def _refused_key(self) -> EdgechatError:
        return EdgechatError(
            f"the server at {self.where} refused the API key; give the right one with "
            "--api-key or EDGECHAT_API_KEY"
        )

    def _explain(self, exc) -> EdgechatError:
        o = self._openai
        if isinstance(exc, o.AuthenticationError | o.PermissionDeniedError):
            return self._refused_key()
        if isinstance(exc, o.NotFoundError) and "model" not in str(exc.message).lower():
            return EdgechatError(
                f"{self.url} does not answer as an OpenAI-compatible API; give its /v1 address"
            )
        if isinstance(exc, o.APIStatusError):
            message = shown(getattr(exc, "message", None) or type(exc).__name__)
            if exc.status_code == 413 or "context" in message.lower():
                return ContextOverflow(f"the server says the text is too long: {message}")
            return EdgechatError(f"the server at {self.where} answered: {message}")
        said = explain(exc, self.where)
        if said is not None:
            return said
        if isinstance(exc, o.APIError):
            return EdgechatError(f"the server at {self.where} failed: {shown(exc.message)}")
        raise exc

    # -- facts ---------------------------------------------------------------------------

    def info(self) -> dict:
        return {
            "name": self.model,
            "path": self.url,
            "remote": True,
            "url": self.url,
            "n_ctx": self.n_ctx,
            "n_ctx_known": self.n_ctx_known,
            "models": self.models,
        }

    def close(self) -> None:
        self._client.close()
        self._http.close()

    def __enter__(self) -> RemoteEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- token counts (estimated) ----------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False):
        return estimate_tokens(text)

    def detokenize(self, tokens: Sequence[str]) -> str:
        return "".join(tokens)

    def prompt_tokens(self, messages: Sequence[Message]) -> list[str]:
        return self._prompts.tokens(messages)

    def fit(self, messages: Sequence[Message], reserve: int) -> tuple[list[Message], int, list]:
        """Drop the oldest turns until it fits: the local engine's policy, estimated counts."""
        return self._prompts.fit(messages, reserve, self.n_ctx)

    # -- generation ----------------------------------------------------------------------

    def cancel(self) -> None:
        self._cancel.set()

    def chat(
        self, messages: Sequence[Message], sampling: Sampling | None = None, *, drop_oldest=True
    ) -> Reply:
        sampling = sampling or Sampling()
        self._cancel.clear()
        reserve = reply_reserve(sampling.max_tokens, self.n_ctx)
        if drop_oldest:
            kept, dropped, tokens = self.fit(messages, reserve)
        else:
            kept, dropped = list(messages), 0
            tokens = self._prompts.whole(messages, reserve, self.n_ctx, self.n_ctx)
        return Reply(
            self._stream({"messages": kept}, sampling, len(tokens), dropped), self, dropped
        )

    def complete(self, prompt: str, sampling: Sampling | None = None) -> Reply:
        """The continuation of raw ``prompt`` text, through the server's /v1/completions."""
        sampling = sampling or Sampling()
        self._cancel.clear()
        reserve = reply_reserve(sampling.max_tokens, self.n_ctx)
        n = len(estimate_tokens(prompt))
        if n + reserve > self.n_ctx:
            raise ContextOverflow(
                f"the prompt is about {n} tokens, and with {reserve} kept for the answer it "
                f"does not fit the server's {self.n_ctx}-token context"
            )
        return Reply(self._stream({"prompt": prompt}, sampling, n, 0), self, 0)

    def continue_reply(
        self, messages: Sequence[Message], partial: str, sampling: Sampling | None = None
    ) -> Reply:
        """The chat API has no way to leave the assistant's turn open."""
        raise EdgechatError(
            f"the server at {self.where} cannot continue a reply; ask again to have it written anew"
        )

    def clear_cache(self) -> None:
        """Nothing to do here: the server keeps (or drops) its own cache."""

    def _stream(self, what: dict, s: Sampling, estimate: int, dropped: int) -> Iterator[str]:
        chat = "messages" in what
        args = dict(
            model=self.model,
            **what,
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=s.max_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
        )
        if s.seed != RANDOM_SEED:
            args["seed"] = s.seed
        use = None  # the server's usage, in the last chunk (stream_options)

        def pieces(stream) -> Iterator[tuple[str | None, str | None]]:
            nonlocal use
            for chunk in stream:
                use = getattr(chunk, "usage", None) or use
                yield from self._pieces(chunk, chat)

        api = self._client.chat.completions if chat else self._client.completions
        run = Relay()
        try:
            yield from relay(self, lambda: api.create(**args), pieces, run)
        finally:
            prompt = positive_int(getattr(use, "prompt_tokens", None)) or estimate
            gen = positive_int(getattr(use, "completion_tokens", None)) or run.n_chunks
            self.n_ctx_used = prompt + gen
            self.last_stats = Stats(
                load_s=self.load_s,
                prompt_tokens=prompt,
                prompt_eval_tokens=prompt,
                prompt_s=run.ttft() if run.n_chunks else time.perf_counter() - run.t0,
                gen_tokens=gen,
                gen_s=run.t_last - run.t_first,
                ttft_s=run.ttft(),
                n_ctx_used=self.n_ctx_used,
                n_ctx=self.n_ctx,
                finish=run.ended,
                dropped_messages=dropped,
            )

    def _pieces(self, chunk, chat: bool) -> Iterator[tuple[str | None, str | None]]:
        """(text, finish reason) of each choice of a streamed chunk, its shape checked:
        the client builds chunks from the server's JSON without checking them."""
        choices = getattr(chunk, "choices", None)
        if not isinstance(choices, list):
            raise BadReply(f"the server at {self.where} sent a chunk without a list of choices")
        for choice in choices:
            if chat:
                delta = getattr(choice, "delta", None)
                text = getattr(delta, "content", None) if delta is not None else None
            else:
                text = getattr(choice, "text", None)
            reason = getattr(choice, "finish_reason", None)
            if not isinstance(text, str | None) or not isinstance(reason, str | None):
                raise BadReply(f"the server at {self.where} sent a chunk of the wrong shape")
            yield text, reason

    def _cut(self, n_chunks: int) -> ReplyCut:
        """The stream ended without saying the reply was complete."""
        if not n_chunks:
            return ReplyCut(
                f"the server at {self.where} ended its answer without a reply in it (not a "
                "stream the API sends)"
            )
        return ReplyCut(
            f"the server at {self.where} stopped before the end of the reply: what came is partial"
        )


def open_remote(url: str, model: str | None = None, api_key: str | None = None) -> RemoteEngine:
    """The engine for the server at ``url``: Ollama's own API when the address names no
    path (``http://HOST:11434``) and the server answers Ollama's /api/version there, else
    the OpenAI-compatible API (at /v1 unless the address names another path)."""
    scheme, where, path = check_url(url)
    if not path.strip("/"):
        root = f"{scheme}://{where}"
        if speaks_ollama(root, api_key):
            from edgechat.llama.remote_ollama import OllamaEngine

            return OllamaEngine(root, model, api_key)
    return RemoteEngine(url, model, api_key)


def speaks_ollama(root: str, api_key: str | None = None) -> bool:
    """Whether the server at ``root`` answers Ollama's /api/version (under the one
    policy of remote_http.py: a redirect or a web page is not an answer)."""
    import httpx

    where = check_url(root)[1]
    try:
        with httpx.Client(**options(where, api_key, PROBE_TIMEOUT_S)) as http:
            data = http.get(root + "/api/version").json()
    except (EdgechatError, httpx.HTTPError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and isinstance(data.get("version"), str)
