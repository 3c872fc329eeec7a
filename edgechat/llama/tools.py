"""Tool calls in a model family's own shape: which shape a chat template writes, the
grammar that keeps a call valid JSON of its tool's schema, and the reply read back as
text and calls (whole, or as it streams).

The shapes (as llama.cpp's and Ollama's parsers know them):
- ``hermes``: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, one block a
  call (Hermes, Qwen 2.5/3, and the ChatML tools templates);
- ``mistral``: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]``;
- ``llama3``: the reply is one JSON object ``{"name": ..., "parameters": {...}}``.

A tool is OpenAI's (and Ollama's) ``{"type": "function", "function": {"name",
"description", "parameters"}}``; a call is ``{"name": str, "arguments": dict}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from edgechat.errors import EdgechatError
from edgechat.llama.grammar import json_rule

NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class ToolError(EdgechatError):
    """Tools or a tool choice a request cannot use."""


@dataclass(frozen=True)
class CallShape:
    name: str
    opening: str  # what starts a call (the lazy grammar's trigger)
    closing: str  # what ends one ("": the reply's end)
    key: str  # the arguments' key
    many: bool  # one opening for a JSON list of calls


SHAPES = {
    "hermes": CallShape("hermes", "<tool_call>", "</tool_call>", "arguments", False),
    "mistral": CallShape("mistral", "[TOOL_CALLS]", "", "arguments", True),
    "llama3": CallShape("llama3", '{"name"', "", "parameters", False),
}


def shape_of(template: str) -> str | None:
    """The call shape a chat template writes, or None when it takes no tools."""
    from jinja2 import Environment, meta

    try:
        names = meta.find_undeclared_variables(Environment().parse(template))
    except Exception:
        names = set()
    if "tools" not in names:
        return None
    if "[TOOL_CALLS]" in template:
        return "mistral"
    if "<|python_tag|>" in template or "ipython" in template:
        return "llama3"
    return "hermes"  # <tool_call>, and the default of templates that take tools


def thinks(template: str) -> bool:
    """Whether a template has a thinking switch (Qwen 3's ``enable_thinking``)."""
    return "enable_thinking" in template


def check_tools(tools: Any) -> list[dict]:
    """OpenAI's and Ollama's ``tools``, checked: a list of functions with a name and an
    object schema for their parameters. Returns them with parameters filled in."""
    if not isinstance(tools, list):
        raise ToolError("tools must be a list of functions")
    out, seen = [], set()
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise ToolError(f'tools[{i}] is not a function: give {{"type": "function", ...}}')
        if not isinstance(fn, dict):
            raise ToolError(f"tools[{i}].function is missing: give its name and parameters")
        name = fn.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise ToolError(f"tools[{i}].function.name must be 1-64 letters, digits, _ . or -")
        if name in seen:
            raise ToolError(f"tools[{i}]: the name {name!r} is given twice")
        seen.add(name)
        params = fn.get("parameters")
        if params is None:
            params = {"type": "object", "properties": {}}
        if not isinstance(params, dict):
            raise ToolError(f"tools[{i}].function.parameters must be a JSON schema object")
        out.append({"type": "function", "function": {**fn, "parameters": params}})
    return out


def choose(tools: list[dict], choice: Any) -> tuple[list[dict], bool]:
    """``tool_choice`` (auto, none, required, or one function): the tools a reply may
    call and whether it must call one."""
    if choice is None or choice == "auto":
        return tools, False
    if choice == "none":
        return [], False
    if choice == "required":
        return tools, True
    name = None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") or choice.get("name")
    picked = [t for t in tools if t["function"]["name"] == name]
    if not picked:
        raise ToolError(
            "tool_choice must be auto, none, required, or "
            '{"type": "function", "function": {"name": NAME}} naming one of the tools'
        )
    return picked, True


def call_grammar(shape: str, tools: list[dict]) -> str:
    """The grammar of what follows a call's opening: JSON naming one of ``tools`` with
    arguments valid for its schema."""
    s = SHAPES[shape]
    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t["function"]["name"]},
                s.key: t["function"]["parameters"],
            },
            "required": ["name", s.key],
            "additionalProperties": False,
        }
        for t in tools
    ]
    one = calls[0] if len(calls) == 1 else {"anyOf": calls}
    if s.many:
        return f"start: {json_rule({'type': 'array', 'items': one, 'minItems': 1})}"
    lead = '"\\n"? ' if shape == "hermes" else ""
    return f"start: {lead}{json_rule(one)}"


def forced_start(shape: str) -> str:
    """What a reply that must call a tool starts with (written into the prompt)."""
    return {"hermes": "<tool_call>\n", "mistral": "[TOOL_CALLS]"}.get(shape, "")


def parse(shape: str, text: str) -> tuple[str, list[dict]]:
    """A whole reply as (its text, its calls)."""
    s = SHAPES[shape]
    if shape == "hermes":
        calls, kept = [], []
        pos = 0
        pattern = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.S)
        for m in pattern.finditer(text):
            call = _call(m.group(1), s.key)
            if call is None:
                continue
            kept.append(text[pos : m.start()])
            calls.append(call)
            pos = m.end()
        return ("".join(kept) + text[pos:]).strip() if calls else text, calls
    if s.many:  # [TOOL_CALLS] is a control token: the text may lack it
        head, _, body = text.partition(s.opening) if s.opening in text else ("", "", text)
    else:
        head, body = "", text.replace("<|python_tag|>", "", 1)
    body = body.strip()
    try:
        value, end = json.JSONDecoder().raw_decode(body)
    except ValueError:
        return text, []
    values = value if isinstance(value, list) else [value]
    calls = [c for c in (_call(json.dumps(v), s.key) for v in values) if c is not None]
    if not calls or len(calls) != len(values) or (s.many != isinstance(value, list)):
        return text, []
    return (head + body[end:]).strip(), calls


def _call(text: str, key: str) -> dict | None:
    try:
        value = json.loads(text.strip())
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    args = value.get(key, value.get("arguments", value.get("parameters", {})))
    return {"name": value["name"], "arguments": args if isinstance(args, dict) else {}}


class CallStream:
    """A reply read as it streams: ``feed(piece)`` returns what can be shown now, as
    ``("text", str)`` and ``("call", dict)`` events; ``end()`` what is left. Text that
    may be a call's opening is held back until it is known not to be; a call is given
    whole, when it ends. ``forced``: the prompt wrote the opening (tool_choice)."""

    def __init__(self, shape: str, forced: bool = False) -> None:
        self.shape = SHAPES[shape]
        self._held = forced_start(shape) if forced else ""
        self._inside = forced
        self._shown = False  # some text was given

    def feed(self, piece: str) -> list[tuple[str, Any]]:
        self._held += piece
        out: list[tuple[str, Any]] = []
        s = self.shape
        while self._held:
            if self._inside:
                close = self._held.find(s.closing) if s.closing else -1
                if close < 0:
                    break  # the call goes on (to the reply's end, without a closing)
                cut = close + len(s.closing)
                block, self._held, self._inside = self._held[:cut], self._held[cut:], False
                text, calls = parse(s.name, block)
                out += [("call", c) for c in calls] or self._text(text)
                continue
            if s.name == "llama3":  # a call is the whole reply: it starts with {
                head = self._held.lstrip()
                if not self._shown and (not head or head.startswith("{")):
                    self._inside = bool(head)
                    break
                out += self._text(self._held)
                self._held = ""
                break
            at = self._held.find(s.opening)
            if at < 0:
                at = len(self._held) - _partial(self._held, s.opening)
                out += self._text(self._held[:at])
                self._held = self._held[at:]
                break
            out += self._text(self._held[:at])
            self._held, self._inside = self._held[at:], True
        return out

    def _text(self, text: str) -> list[tuple[str, Any]]:
        self._shown = self._shown or bool(text.strip())
        return [("text", text)] if text else []

    def end(self) -> list[tuple[str, Any]]:
        held, self._held = self._held, ""
        text, calls = parse(self.shape.name, held) if held else ("", [])
        return self._text(text) + [("call", c) for c in calls]


def _partial(text: str, opening: str) -> int:
    """How many of ``text``'s last characters may begin ``opening``."""
    for k in range(min(len(opening) - 1, len(text)), 0, -1):
        if text.endswith(opening[:k]):
            return k
    return 0
