"""The OpenAI wire format: request validation (pydantic), response and chunk shapes,
errors in OpenAI's shape, so the server module only routes."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgechat import limits

__all__ = ["ApiError", "ChatRequest", "CompletionRequest", "ValidationError"]


class ApiError(Exception):
    """An error to answer in OpenAI's shape, with its HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict:
        kind = {
            401: "authentication_error",
            404: "invalid_request_error",
            429: "rate_limit_error",
        }.get(self.status, "invalid_request_error" if self.status < 500 else "server_error")
        return {
            "error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        }


def from_validation(exc: ValidationError) -> ApiError:
    """The first complaint pydantic found, as a 400 that names the field."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return ApiError(400, f"{where}: {first.get('msg', 'invalid')}", "invalid_value", where or None)


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_Part] | None = None

    def as_engine(self) -> dict:
        """{"role", "content"} as the chat template wants it; text parts joined."""
        content = self.content
        if isinstance(content, list):
            if any(p.type != "text" for p in content):
                raise ApiError(
                    400, "only text content is supported by this model", "unsupported_content"
                )
            content = "".join(p.text or "" for p in content)
        role = "system" if self.role == "developer" else self.role
        out = {"role": role, "content": content or ""}
        for key in ("tool_calls", "tool_call_id", "name"):  # a tool call and its result
            if (self.model_extra or {}).get(key):
                out[key] = self.model_extra[key]
        return out


class _Common(BaseModel):
    """The sampling fields both endpoints share."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    model: str | None = None
    # Bounds from the settings' schema (limits.py): the CLI and the server agree.
    max_tokens: int | None = Field(None, **limits.field("max_tokens"))
    temperature: float | None = Field(None, **limits.field("temperature"))
    top_p: float | None = Field(None, **limits.field("top_p"))
    # llama-server's extensions to OpenAI's fields (unset: the server's defaults, chat's)
    top_k: int | None = Field(None, **limits.field("top_k"))
    min_p: float | None = Field(None, **limits.field("min_p"))
    repeat_penalty: float | None = Field(None, **limits.field("repeat_penalty"))
    stop: str | list[str] | None = None
    seed: int | None = Field(None, **limits.field("api_seed"))
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = 1
    # Whose cache a request may reuse (serve/streams.py owner_of): vLLM's cache_salt,
    # OpenAI's prompt_cache_key and user.
    cache_salt: str | None = Field(None, max_length=limits.RANGES["cache_key"][2])
    prompt_cache_key: str | None = Field(None, max_length=limits.RANGES["cache_key"][2])
    user: str | None = Field(None, max_length=limits.RANGES["cache_key"][2])

    @field_validator("n")
    @classmethod
    def _one(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n=1 is supported")
        return n

    @field_validator("stop")
    @classmethod
    def _stops(cls, stop):
        return check_stops([stop] if isinstance(stop, str) else list(stop or []))

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, **limits.field("max_tokens"))
    response_format: dict[str, Any] | None = None
    tools: Any = None
    tool_choice: Any = None

    def schema(self) -> Any:
        """What ``response_format`` asks for: None (text), True (a JSON object) or a
        JSON schema."""
        rf = self.response_format or {}
        kind = rf.get("type", "text")
        if kind == "text":
            return None
        if kind == "json_object":
            return True
        spec = rf.get("json_schema")
        if kind == "json_schema" and isinstance(spec, dict) and "schema" in spec:
            return spec["schema"]
        if kind == "json_schema":
            raise ApiError(
                400,
                'response_format json_schema needs {"json_schema": {"name": ..., "schema": {...}}}',
                "invalid_value",
                "response_format",
            )
        raise ApiError(
            400,
            f"response_format type {kind!r} is not one of text, json_object, json_schema",
            "invalid_value",
            "response_format",
        )

    @property
    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Common):
    prompt: str | list[str]

    @property
    def limit(self) -> int | None:
        return self.max_tokens

    def text(self) -> str:
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        if len(prompts) != 1:
            raise ApiError(400, "give one prompt per request", "invalid_value", "prompt")
        if not prompts[0]:
            why = "the prompt is empty: give text to continue"
            raise ApiError(400, why, "invalid_value", "prompt")
        return prompts[0]


def check_stops(stops: list[str]) -> list[str]:
    """Stop strings within limits.py's bounds (each costs the llama thread a look at
    every token of a reply), the empty ones left out; ValueError(words) if not."""
    most, longest = limits.RANGES["stops"][2], limits.RANGES["stop_chars"][2]
    if len(stops) > most:
        raise ValueError(f"at most {most} stop strings, got {len(stops)}")
    if any(len(s) > longest for s in stops):
        raise ValueError(f"a stop string may have at most {longest} characters")
    return [s for s in stops if s]


# -- responses -------------------------------------------------------------------------


def new_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}"


def usage(prompt: int, completion: int) -> dict:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def tool_calls(calls: list[dict], ids: list[str], first: int = 0) -> list[dict]:
    """Calls in OpenAI's shape (arguments as JSON text); ``index`` for stream deltas."""
    return [
        {
            "index": first + i,
            "id": ids[i],
            "type": "function",
            "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
        }
        for i, c in enumerate(calls)
    ]


def chat_response(
    rid: str, model: str, text: str, finish: str, use: dict, calls: list | None = None
) -> dict:
    message: dict = {"role": "assistant", "content": text}
    if calls:
        message = {**message, "content": text or None, "tool_calls": calls}
        finish = "tool_calls" if finish == "stop" else finish
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish,
                "logprobs": None,
            }
        ],
        "usage": use,
    }


def chat_chunk(rid: str, model: str, delta: dict, finish: str | None = None) -> dict:
    return {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


def completion_response(
    rid: str, model: str, text: str, finish: str | None, use: dict | None
) -> dict:
    body = {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
    }
    if use is not None:
        body["usage"] = use
    return body


def timings(stats) -> dict:
    """The engine's own figures for one reply, in llama-server's ``timings`` shape."""
    return {
        "prompt_n": stats.prompt_eval_tokens,
        "prompt_ms": round(stats.prompt_s * 1000, 2),
        "prompt_per_second": round(stats.prompt_tps, 2),
        "predicted_n": stats.gen_tokens,
        "predicted_ms": round(stats.gen_s * 1000, 2),
        "predicted_per_second": round(stats.gen_tps, 2),
    }


def usage_chunk(rid: str, model: str, obj: str, use: dict) -> dict:
    """The last chunk of a stream asked for with stream_options.include_usage."""
    return {
        "id": rid,
        "object": obj,
        "created": int(time.time()),
        "model": model,
        "choices": [],
        "usage": use,
    }


def cached(stats) -> int:
    """Prompt tokens the cache already held (a conversation's earlier turns)."""
    return stats.prompt_tokens - stats.prompt_eval_tokens
