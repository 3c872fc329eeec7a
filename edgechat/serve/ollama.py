"""Ollama's wire format: request validation (pydantic), its options mapped to the
sampler, the NDJSON objects of /api/chat and /api/generate, the model as /api/tags,
/api/show and /api/ps describe it, and errors in its shape (``{"error": message}``).
The routes are in ollama_routes.py; OpenAI's format is protocol.py.

Field names and units follow Ollama's API (durations in nanoseconds, ``created_at`` in
RFC 3339) and what the official ``ollama`` clients parse.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgechat import limits
from edgechat.planning.plan import Sampling
from edgechat.serve.protocol import ApiError, check_stops

# The Ollama release whose API this follows: clients such as Open WebUI gate features on it.
VERSION = "0.12.0"
FOREVER = "9999-12-31T23:59:59Z"  # keep_alive: the model stays loaded while serve runs


def error_body(err: ApiError) -> dict:
    return {"error": err.message}


def stamp(t: float | None = None) -> str:
    """RFC 3339 in UTC, as Ollama writes ``created_at``."""
    moment = datetime.fromtimestamp(time.time() if t is None else t, timezone.utc)
    return moment.isoformat().replace("+00:00", "Z")


def ns(seconds: float) -> int:
    return max(0, int(seconds * 1e9))


# -- requests ------------------------------------------------------------------------------


class Options(BaseModel):
    """The options that mean something here; the rest (num_gpu, num_thread, mirostat
    ...) are accepted and ignored, as Ollama ignores what a runner does not use."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    temperature: float | None = Field(None, **limits.field("temperature"))
    top_k: int | None = Field(None, **limits.field("top_k"))
    top_p: float | None = Field(None, **limits.field("top_p"))
    min_p: float | None = Field(None, **limits.field("min_p"))
    repeat_penalty: float | None = Field(None, **limits.field("repeat_penalty"))
    repeat_last_n: int | None = Field(None, **limits.field("repeat_last_n"))
    seed: int | None = Field(None, **limits.field("api_seed"))
    num_predict: int | None = Field(None, **limits.field("num_predict"))  # -1, -2: context
    num_ctx: int | None = Field(None, **limits.field("num_ctx"))
    stop: list[str] | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, stop):
        return None if stop is None else check_stops(stop)


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[Any] | None = None
    tool_calls: list[Any] | None = None

    def as_engine(self) -> dict:
        if self.images:
            raise ApiError(400, "this model reads text only: it cannot take images")
        out: dict = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = self.tool_calls
        name = (self.model_extra or {}).get("tool_name")
        if self.role == "tool" and isinstance(name, str):
            out["name"] = name
        return out


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    stream: bool = True
    options: Options | None = None
    format: Any = None
    keep_alive: Any = None
    think: bool | str | None = None
    cache_salt: str | None = Field(None, max_length=limits.RANGES["cache_key"][2])  # as vLLM

    def schema(self) -> Any:
        """``format``: None (text), True ("json": any JSON object) or a JSON schema."""
        if self.format in (None, ""):
            return None
        if self.format == "json":
            return True
        if isinstance(self.format, dict):
            return self.format
        raise ApiError(400, 'format must be "json" or a JSON schema object')

    @property
    def keep_seconds(self) -> float | None:
        return keep_seconds(self.keep_alive)

    @property
    def unloads(self) -> bool:
        """keep_alive 0: the client asks to unload the model now."""
        return self.keep_seconds == 0


UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def keep_seconds(value: Any) -> float | None:
    """Ollama's ``keep_alive``: seconds (a number) or a duration ("5m", "1h30m", "-1"); a
    negative one keeps the model loaded; None: the server's default."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return -1.0 if value < 0 else float(value)
    if isinstance(value, str):
        import re

        text = value.strip()
        parts = re.findall(r"(-?\d+(?:\.\d+)?)(ms|s|m|h)?", text)
        if parts and "".join(n + u for n, u in parts) == text:
            total = sum(float(n) * UNITS[u or "s"] for n, u in parts)
            return -1.0 if total < 0 else total
    raise ApiError(400, f'keep_alive {value!r} is not a duration: give seconds, "5m" or "-1"')


class ChatRequest(_Common):
    messages: list[Message] = Field(default_factory=list)
    tools: list[Any] | None = None


class GenerateRequest(_Common):
    prompt: str = ""
    suffix: str = ""
    system: str | None = None
    template: str | None = None
    context: list[int] | None = Field(None, max_length=limits.MAX_CTX)  # checked: prepare.py
    raw: bool = False
    images: list[Any] | None = None

    def messages(self) -> list[dict]:
        """The prompt as a chat turn for the model's template (after Ollama's system)."""
        if self.images:
            raise ApiError(400, "this model reads text only: it cannot take images")
        if self.suffix:
            raise ApiError(400, "this model cannot fill in the middle (suffix)")
        if self.template:
            raise ApiError(400, "template overrides are not supported; use raw with the text")
        turns = []
        if self.system and not self.context:  # a continued chat has its system prompt
            turns.append({"role": "system", "content": self.system})
        return [*turns, {"role": "user", "content": self.prompt}]


def sampling(
    options: Options | None, base: Sampling, n_ctx: int, trained: int = 0
) -> tuple[Sampling, int, list]:
    """The sampler for a request's ``options`` over the server's defaults ``base``, the
    context it may use (0: the whole of ``n_ctx``) and its stop strings. ``trained``: the
    model's trained context (0: unknown), the most any server can give it."""
    o = options or Options()
    if o.num_ctx is not None and o.num_ctx > n_ctx:
        raise ApiError(400, too_long(o.num_ctx, n_ctx, trained))
    limit = o.num_ctx or n_ctx
    changes: dict[str, Any] = {
        k: v
        for k in ("temperature", "top_k", "top_p", "min_p", "repeat_penalty")
        if (v := getattr(o, k)) is not None
    }
    if o.repeat_last_n is not None:
        changes["repeat_last_n"] = limit if o.repeat_last_n < 0 else o.repeat_last_n
    if o.seed is not None and o.seed >= 0:
        changes["seed"] = o.seed % limits.RANDOM_SEED  # llama.cpp's seeds are uint32
    if o.num_predict is not None:
        changes["max_tokens"] = limit if o.num_predict < 0 else max(1, o.num_predict)
    return replace(base, **changes), o.num_ctx or 0, [s for s in o.stop or [] if s]


def too_long(num_ctx: int, n_ctx: int, trained: int) -> str:
    """Why a ``num_ctx`` beyond this server's context is refused, and what can work: a
    restart with a larger ``--ctx``, never beyond what the model was trained for."""
    said = f"num_ctx {num_ctx} is more than the {n_ctx} tokens this server gives a conversation"
    if not trained or num_ctx <= trained:
        return f"{said}; restart it with `edgechat serve --ctx {num_ctx}`"
    if n_ctx >= trained:
        return (
            f"{said}, the most this model takes (the context it was trained for); "
            f"send num_ctx {n_ctx} or less"
        )
    return (
        f"{said}, and this model takes at most {trained} (the context it was trained for); "
        f"restart it with `edgechat serve --ctx {trained}`"
    )


# -- responses -----------------------------------------------------------------------------


def chat_chunk(model: str, text: str, calls: list | None = None, thinking: str = "") -> dict:
    message: dict = {"role": "assistant", "content": text}
    if thinking:
        message["thinking"] = thinking
    if calls:
        message["tool_calls"] = [
            {"function": {"index": i, "name": c["name"], "arguments": c["arguments"]}}
            for i, c in enumerate(calls)
        ]
    return {"model": model, "created_at": stamp(), "message": message, "done": False}


def generate_chunk(model: str, text: str) -> dict:
    return {"model": model, "created_at": stamp(), "response": text, "done": False}


def final(base: dict, finish: str, stats, t_request: float) -> dict:
    """The last object of a reply: why it ended (``stop``, ``length``, or ``cancelled``
    when the server cut it short, as when it stops) and what it cost, in nanoseconds.
    ``prompt_eval_count`` counts the prompt tokens evaluated now (a conversation's
    cached start is not), as Ollama counts them."""
    out = {**base, "done": True, "done_reason": finish}
    out["total_duration"] = ns(time.perf_counter() - t_request)
    out["load_duration"] = 0  # the model was loaded when the server started
    if stats is not None:
        out["prompt_eval_count"] = stats.prompt_eval_tokens
        out["prompt_eval_duration"] = ns(stats.prompt_s)
        out["eval_count"] = stats.gen_tokens
        out["eval_duration"] = ns(stats.gen_s)
    return out


# -- the model, as Ollama describes one ----------------------------------------------------


@dataclass(frozen=True)
class OllamaModel:
    """The served model in Ollama's terms, worked out once at start-up."""

    name: str  # name:tag, as Ollama lists models
    details: dict
    model_info: dict
    template: str
    parameters: str
    license: str
    size: int  # bytes on disk (/api/tags)
    size_loaded: int  # bytes in memory, RAM and VRAM (/api/ps)
    size_vram: int
    digest: str
    modified_at: str
    context_length: int
    trained_context: int = 0  # what the model was trained for: the most num_ctx can be
    capabilities: tuple[str, ...] = ("completion",)

    def aliases(self) -> set[str]:
        base = self.name.removesuffix(":latest")
        return {self.name, base}

    def tag(self) -> dict:
        return {
            "name": self.name,
            "model": self.name,
            "modified_at": self.modified_at,
            "size": self.size,
            "digest": self.digest,
            "details": self.details,
        }

    def running(self, expires: float | None = None) -> dict:
        """As /api/ps lists it; ``expires``: when it unloads (time.time(); None: never)."""
        return {
            **self.tag(),
            "size": self.size_loaded,
            "size_vram": self.size_vram,
            "expires_at": FOREVER if expires is None else stamp(expires),
            "context_length": self.context_length,
        }

    def show(self) -> dict:
        return {
            "license": self.license,
            "modelfile": f"# served by edgechat\nFROM {self.name}\n"
            + "".join(f"PARAMETER {line}\n" for line in self.parameters.splitlines()),
            "parameters": self.parameters,
            "template": self.template,
            "details": self.details,
            "model_info": self.model_info,
            "capabilities": list(self.capabilities),
            "modified_at": self.modified_at,
        }


def capabilities(info: dict) -> tuple[str, ...]:
    """What /api/show says the model does (clients offer tools and thinking from it)."""
    found = ["completion"]
    if info.get("tool_shape"):
        found.append("tools")
    if info.get("thinking"):
        found.append("thinking")
    return tuple(found)


def params_label(n: int) -> str:
    """Parameters as Ollama writes them: 134.52M, 8.0B."""
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def describe(
    model_id: str,
    path: Path,
    meta: dict,
    *,
    quant: str | None,
    n_params: int,
    n_ctx: int,
    n_ctx_train: int = 0,
    sampling: Sampling,
    template: str,
    ram: int,
    vram: int,
    capabilities: tuple[str, ...] = ("completion",),
) -> OllamaModel:
    """``meta`` is the GGUF header's metadata (facts/gguf.py ``metadata``)."""
    st = path.stat()
    arch = str(meta.get("general.architecture") or "unknown")
    info = {k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in meta.items()}
    info["general.parameter_count"] = n_params
    info.pop("tokenizer.chat_template", None)  # /api/show gives it as the template
    parameters = "\n".join(
        [
            f"num_ctx {n_ctx}",
            f"num_predict {sampling.max_tokens}",
            f"temperature {sampling.temperature}",
            f"top_k {sampling.top_k}",
            f"top_p {sampling.top_p}",
            f"min_p {sampling.min_p}",
            f"repeat_penalty {sampling.repeat_penalty}",
            f"repeat_last_n {sampling.repeat_last_n}",
        ]
    )
    # Not the file's hash (hashing gigabytes would delay the start): stable while the
    # file is unchanged, which is what clients use a digest for.
    digest = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    lic = meta.get("general.license")
    return OllamaModel(
        name=model_id if ":" in model_id else f"{model_id}:latest",
        details={
            "parent_model": "",
            "format": "gguf",
            "family": arch,
            "families": [arch],
            "parameter_size": params_label(n_params),
            "quantization_level": quant or "unknown",
        },
        model_info=info,
        template=template,
        parameters=parameters,
        license=lic if isinstance(lic, str) else "",
        size=st.st_size,
        size_loaded=ram + vram,
        size_vram=vram,
        digest=digest.hexdigest(),
        modified_at=stamp(st.st_mtime),
        context_length=n_ctx,
        trained_context=n_ctx_train,
        capabilities=capabilities,
    )
