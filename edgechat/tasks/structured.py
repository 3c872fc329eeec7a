"""One answer as JSON that matches a schema (`edgechat chat --schema`, as `llm --schema`):
the schema from a file or the command line, told to the model and enforced while it
samples (llama/grammar.py), and the reply checked before a script gets it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgechat.errors import EdgechatError, InputError
from edgechat.llama import grammar
from edgechat.llama.contract import ChatEngine
from edgechat.llama.reply import Stats
from edgechat.planning.plan import Sampling

MAX_SCHEMA = 1 << 20  # a schema file's bytes


def load_schema(given: str) -> Any:
    """``given``: JSON text (it starts with ``{``) or a file holding it."""
    text = given.strip()
    if not text.startswith("{"):
        path = Path(given).expanduser()
        if not path.is_file():
            raise InputError(f"--schema {given!r}: give a JSON schema, or a file holding one")
        if path.stat().st_size > MAX_SCHEMA:
            raise InputError(f"{path} is over {MAX_SCHEMA >> 20} MiB: not a JSON schema")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read {path}: {exc}") from None
    try:
        schema = json.loads(text)
    except ValueError as exc:
        raise InputError(f"the schema is not valid JSON ({exc})") from None
    if not isinstance(schema, dict):
        raise InputError("the schema must be a JSON object")
    return schema


def answer(
    engine: ChatEngine, prompt: str, schema: Any, sampling: Sampling, system: str = ""
) -> tuple[Any, str, Stats | None]:
    """(the value, its JSON text, the reply's stats). Raises EdgechatError when the
    reply was cut before its JSON ended."""
    if not engine.is_local:
        raise EdgechatError(
            f"--schema constrains sampling on this machine; {engine.where} cannot: "
            "use a local model"
        )
    rule = grammar.json_grammar(schema)
    messages = [{"role": "system", "content": system}] if system else []
    messages = grammar.told([*messages, {"role": "user", "content": prompt}], schema)
    from dataclasses import replace

    reply = engine.chat(messages, replace(sampling, grammar=rule, grammar_after=()))
    text = "".join(reply)
    stats = reply.stats
    try:
        value = json.loads(text)
    except ValueError:
        why = stats.finish if stats else "stop"
        if why in ("length", "context"):
            raise EdgechatError(
                f"the reply was cut at {stats.gen_tokens} tokens before its JSON ended; "
                "raise --max-tokens"
            ) from None
        raise EdgechatError("the reply ended before its JSON did") from None
    return value, text, stats
