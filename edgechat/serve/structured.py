"""What both APIs do with structured output, tools and thinking: a request's fields
checked (a 400 in the API's shape for what cannot be honoured, never silently less), turned
into the job's grammar, prompt note and template variables, and the reply read back as
text, tool calls and thinking, whole or as it streams."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from typing import Any

from edgechat.llama import grammar as g
from edgechat.llama import tools as t
from edgechat.planning.plan import Sampling
from edgechat.serve.protocol import ApiError


@dataclass
class Plan:
    """How one chat request is run and read back."""

    messages: list[dict]
    sampling: Sampling
    tools: list[dict] | None = None  # for the template
    prefill: str = ""
    shape: str | None = None  # tool calls are read back in this shape
    forced: bool = False
    think: bool | None = None

    def job_args(self) -> dict:
        return {"tools": self.tools, "prefill": self.prefill, "think": self.think}

    def reader(self) -> Reader:
        return Reader(self.shape, self.forced, bool(self.think))


def plan(
    info: dict,
    model: str,
    messages: list[dict],
    sampling: Sampling,
    *,
    schema: Any = None,
    tools: Any = None,
    choice: Any = None,
    think: Any = None,
) -> Plan:
    """``schema``: None (free text), True (any JSON object) or a JSON schema."""
    out = Plan(messages, sampling)
    if think:
        if not info.get("thinking"):
            raise ApiError(400, f'"{model}" does not support thinking')
        out.think = True
    elif think is False and info.get("thinking"):
        out.think = False
    if tools:
        shape = info.get("tool_shape")
        if not shape:
            raise ApiError(
                400, f"{model} does not support tools: its chat template takes none", "tools"
            )
        try:
            checked = t.check_tools(tools)
            callable_, forced = t.choose(checked, choice)
        except t.ToolError as exc:
            raise ApiError(400, str(exc), "invalid_tools", "tools") from None
        if callable_:
            try:
                grammar = t.call_grammar(shape, callable_)
                g.check(grammar)
            except g.GrammarError as exc:
                raise ApiError(400, f"tool parameters: {exc}", "invalid_tools", "tools") from None
            after = () if forced else (t.SHAPES[shape].opening,)
            out.sampling = replace(out.sampling, grammar=grammar, grammar_after=after)
            out.tools, out.shape, out.forced = checked, shape, forced
            out.prefill = t.forced_start(shape) if forced else ""
    if schema is not None and out.shape is None:
        try:
            grammar = g.json_grammar(None if schema is True else schema)
        except g.GrammarError as exc:
            raise ApiError(400, str(exc), "invalid_schema", "format") from None
        out.sampling = replace(out.sampling, grammar=grammar, grammar_after=())
        out.messages = g.told(messages, None if schema is True else schema)
    return out


def template_messages(messages: list[dict]) -> list[dict]:
    """Messages as chat templates take them: an assistant's tool calls with their
    arguments as objects (OpenAI sends them as JSON text)."""
    out = []
    for m in messages:
        calls = m.get("tool_calls")
        if calls:
            fixed = []
            for c in calls:
                fn = dict((c or {}).get("function") or {})
                args = fn.get("arguments")
                if isinstance(args, str):
                    try:
                        fn["arguments"] = json.loads(args) if args.strip() else {}
                    except ValueError:
                        raise ApiError(
                            400, "tool_calls: arguments must be JSON text", "invalid_value"
                        ) from None
                fixed.append({"type": "function", "function": fn, **_id(c)})
            m = {**m, "tool_calls": fixed}
        out.append(m)
    return out


def _id(call: dict) -> dict:
    return {"id": call["id"]} if isinstance(call, dict) and call.get("id") else {}


def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


class Reader:
    """A reply's text as the client reads it: its thinking (between ``<think>`` and
    ``</think>``, when asked for), its text and its tool calls. ``feed`` and ``end``
    return ``("thinking"|"text", str)`` and ``("call", dict)`` events."""

    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self, shape: str | None, forced: bool, think: bool) -> None:
        self._calls = t.CallStream(shape, forced) if shape else None
        self._think = think
        self._buf = ""
        self.calls: list[dict] = []

    def feed(self, piece: str) -> list[tuple[str, Any]]:
        events: list[tuple[str, Any]] = []
        if self._think:
            self._buf += piece
            head = self._buf.lstrip()
            if not head or (len(head) < len(self.OPEN) and self.OPEN.startswith(head)):
                return []
            if not head.startswith(self.OPEN):
                self._think, piece, self._buf = False, self._buf, ""
            else:
                inner = head[len(self.OPEN) :]
                end = inner.find(self.CLOSE)
                if end < 0:
                    keep = len(inner) - _partial_end(inner, self.CLOSE)
                    if keep > 0:
                        events.append(("thinking", inner[:keep]))
                        self._buf = self.OPEN + inner[keep:]
                    return events
                if inner[:end]:
                    events.append(("thinking", inner[:end]))
                self._think, self._buf = False, ""
                piece = inner[end + len(self.CLOSE) :].lstrip("\n")
        return events + self._text(piece)

    def _text(self, piece: str) -> list[tuple[str, Any]]:
        if not piece:
            return []
        if self._calls is None:
            return [("text", piece)]
        return self._note(self._calls.feed(piece))

    def _note(self, events):
        self.calls += [e[1] for e in events if e[0] == "call"]
        return events

    def end(self) -> list[tuple[str, Any]]:
        events: list[tuple[str, Any]] = []
        if self._buf:  # thinking that never ended, or only its start
            events.append(("thinking", self._buf.lstrip()[len(self.OPEN) :]))
            self._buf = ""
        if self._calls is not None:
            events += self._note(self._calls.end())
        return events


def _partial_end(text: str, tag: str) -> int:
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:k]):
            return k
    return 0


def read_whole(reader: Reader, text: str) -> tuple[str, str, list[dict]]:
    """(thinking, text, calls) of a whole reply."""
    thinking, out = [], []
    for kind, value in [*reader.feed(text), *reader.end()]:
        if kind == "thinking":
            thinking.append(value)
        elif kind == "text":
            out.append(value)
    return "".join(thinking), "".join(out), reader.calls
