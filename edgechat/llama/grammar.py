"""Constrained decoding: a reply that must be JSON of a schema (or a tool call) is sampled
under a grammar, through llguidance, for every front end (``Engine.chat``, the server's
batcher).

Why llguidance rather than llama.cpp's own GBNF sampler: both reject a token the same
way, but llama.cpp's checks the whole vocabulary token by token, which on two cores cost
6.6-7.3 ms a token with Gemma 3's 262k vocabulary (free sampling: 0.8 ms), while
llguidance computes the same mask in 0.1-0.4 ms (``benchmarks/structured.py``). Either
way, as llama-server does, the token sampled freely is checked first and the mask is
only computed when the grammar refuses it: most tokens of a model that was told the
schema cost one check.

Grammars are llguidance's Lark text (``%json {schema}`` for JSON Schema), plain strings
that travel inside ``Sampling``. ``check`` refuses one that cannot be compiled before a
reply starts; a ``Guide`` follows one reply. Lazy grammars (``Sampling.grammar_after``)
start only after one of their trigger texts has been written (a tool call's opening),
and end when what they describe is complete, so a reply can hold text and calls.
"""

from __future__ import annotations

import json
from typing import Any

from edgechat.errors import EdgechatError

# Compact separators, no free whitespace: a small model cannot loop on blank lines, and
# the JSON reads as models most often write it.
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
ANY_OBJECT: dict = {"type": "object"}  # "json": any JSON object, as Ollama and OpenAI mean


class GrammarError(EdgechatError):
    """A schema or grammar that cannot constrain a reply."""


def _llguidance():
    try:
        import llguidance
    except ImportError:  # pragma: no cover - installed with the serve and structured extras
        raise EdgechatError(
            "structured output needs llguidance: pip install 'edgechat[structured]'"
        ) from None
    return llguidance


def json_rule(schema: Any) -> str:
    """``%json {...}``: a Lark rule for JSON matching ``schema`` (a dict or True)."""
    if schema is True:
        schema = {}
    if not isinstance(schema, dict):
        raise GrammarError("a JSON schema must be a JSON object")
    options = {**JSON_STYLE, **(schema.get("x-guidance") or {})}
    return "%json " + json.dumps({**closed(schema), "x-guidance": options}, ensure_ascii=False)


MAPS = ("properties", "$defs", "definitions", "dependentSchemas")  # name -> schema
ONE = ("items", "additionalItems", "contains", "not", "if", "then", "else", "propertyNames")
MANY = ("anyOf", "oneOf", "prefixItems")  # not allOf: its parts add up to one object


def closed(schema: Any) -> Any:
    """``schema`` with each object that lists its properties closed to others (unless it
    says otherwise), as llama.cpp's and Ollama's grammars have them: every reply still
    matches the schema, and a small model does not wander off into keys of its own."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in MAPS:
        if isinstance(schema.get(key), dict):
            out[key] = {name: closed(sub) for name, sub in schema[key].items()}
    for key in ONE:
        out[key] = closed(schema[key]) if key in schema else None
    for key in MANY:
        if isinstance(schema.get(key), list):
            out[key] = [closed(sub) for sub in schema[key]]
    out = {k: v for k, v in out.items() if v is not None or schema.get(k, 0) is None}
    others = {"additionalProperties", "allOf", "patternProperties", "unevaluatedProperties"}
    if isinstance(schema.get("properties"), dict) and not (others & schema.keys()):
        out["additionalProperties"] = False
    return out


def json_grammar(schema: Any = None) -> str:
    """The grammar of a reply that is one JSON value matching ``schema`` (None: any
    JSON object). Raises GrammarError for a schema the grammar cannot express."""
    grammar = f"start: {json_rule(ANY_OBJECT if schema is None else schema)}"
    check(grammar)
    return grammar


def check(grammar: str) -> None:
    """Raise GrammarError, with llguidance's reason on one line, unless ``grammar``
    compiles (no model needed: the server checks a request before it queues it)."""
    llg = _llguidance()
    try:
        error = llg.LLMatcher.validate_grammar(grammar, None)
    except Exception as exc:  # a grammar that cannot even be read
        error = str(exc)
    if error:
        raise GrammarError(_reason(error))


def _reason(error: str) -> str:
    """llguidance's message without the grammar it quotes back."""
    first = error.split("\n   1 |")[0].split("\n")
    text = " ".join(line.strip() for line in first if line.strip().strip("^"))
    text = text.split("failed to compile JSON schema: ", 1)[-1]
    text = text.removeprefix("at 1(8): ").strip()
    return f"the schema cannot constrain a reply: {text[:300]}"


def schema_note(schema: Any = None) -> str:
    """What the prompt tells the model (Ollama constrains without telling, its #8162):
    a model that knows the schema writes it; the grammar only keeps it on the rails."""
    if schema is None or schema is True or schema == {}:
        return "Answer with one JSON object and nothing else."
    shown = json.dumps(schema, ensure_ascii=False)
    return f"Answer with one JSON object that matches this JSON schema, and nothing else: {shown}"


def told(messages: list[dict], schema: Any = None) -> list[dict]:
    """``messages`` with the schema told to the model in the system prompt, unless they
    already show it."""
    return messages if _shown(messages, schema) else with_note(messages, schema_note(schema))


def _shown(messages: list[dict], schema: Any) -> bool:
    """Whether ``messages`` already show the model ``schema`` (spacing aside), as a client
    that writes it into its own prompt does: told twice, the model reads a longer prompt
    and writes more slowly at that depth (10 % slower for SmolLM2, with a 250-token
    schema, on two cores)."""
    if not isinstance(schema, dict) or not schema:
        return False
    wanted = "".join(json.dumps(schema, ensure_ascii=False).split())
    return any(
        wanted in "".join(m["content"].split())
        for m in messages
        if isinstance(m, dict) and isinstance(m.get("content"), str)
    )


def with_note(messages: list[dict], note: str) -> list[dict]:
    """``messages`` with ``note`` added to the system prompt (or as one, first)."""
    if messages and messages[0].get("role") == "system":
        first = messages[0]
        text = str(first.get("content") or "")
        return [{**first, "content": f"{text}\n\n{note}" if text else note}, *messages[1:]]
    return [{"role": "system", "content": note}, *messages]


def tokenizer(lc, vocab, eog: list[int]):
    """llguidance's view of a model's vocabulary (``vocab``: llama/vocab.py), as
    llguidance.llamacpp builds it (about 0.5 s for 49k tokens, several for 262k: built
    once, on the first constrained reply): each token's bytes, control tokens marked."""
    import ctypes

    llg = _llguidance()
    control, user = lc.LLAMA_TOKEN_ATTR_CONTROL, lc.LLAMA_TOKEN_ATTR_USER_DEFINED
    tokens = []
    for tok in range(vocab.n_tokens):
        piece = vocab.piece(tok, True)
        attr = lc.llama_vocab_get_attr(vocab.ptr, tok)
        if attr & control or (attr & user and piece.startswith(b"<") and piece.endswith(b">")):
            piece = b"\xff" + piece
        tokens.append(piece)
    fptr = ctypes.cast(lc.llama_cpp._lib.llama_tokenize, ctypes.c_void_p).value
    return llg.LLTokenizer.from_llamacpp(
        tokens=tokens, vocab_ptr=vocab.ptr, tokenize_fptr=fptr, eos_token=eog or None
    )


def guide_for(vocab, s):
    """The grammar of one reply sampled with ``s`` (None: free text)."""
    if not s.grammar:
        return None
    return Guide(vocab.guide_tokens(), s.grammar, s.grammar_after, lambda t: vocab.piece(t, True))


class Guide:
    """One reply's grammar: which tokens it allows next, and what it has seen.

    ``allows(tok)`` checks one token; ``mask(row)`` sets every refused token's logit to
    -inf in a row of logits (a numpy view on llama.cpp's); ``take(tok)`` records the
    token chosen. With ``after`` (lazy), the grammar waits until one of those texts has
    been written, applies to what follows, and waits again once that is complete.
    """

    def __init__(self, tok, grammar: str, after: tuple[str, ...] = (), piece=None) -> None:
        llg = _llguidance()
        self._llg, self._tok, self._grammar = llg, tok, grammar
        self._after = tuple(a for a in after if a)
        self._piece = piece  # token -> bytes, for the triggers
        self._tail = b""  # the end of the reply so far, while waiting for a trigger
        self._bits = None
        self.matcher = None if self._after else self._new()

    def _new(self):
        m = self._llg.LLMatcher(self._tok, self._grammar, log_level=0)
        if m.is_error():  # pragma: no cover - check() ran on the same grammar
            raise GrammarError(_reason(m.get_error()))
        return m

    @property
    def active(self) -> bool:
        return self.matcher is not None

    def allows(self, token: int) -> bool:
        return self.matcher.validate_tokens([token]) == 1

    def mask(self, row) -> None:
        import numpy as np

        m = self.matcher
        n = len(row)
        if self._bits is None:
            self._bits = np.zeros((n + 31) // 32, dtype=np.int32)
        m.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        allowed = np.unpackbits(self._bits.view(np.uint8), bitorder="little", count=n)
        np.copyto(row, -np.inf, where=allowed == 0)

    def take(self, token: int) -> None:
        m = self.matcher
        if m is None:
            self._watch(token)
            return
        m.consume_token(token)
        if m.is_error() or (self._after and m.is_stopped()):
            self.matcher, self._tail = None, b""  # complete: free text (or another call)

    def _watch(self, token: int) -> None:
        """Lazy: start the grammar when a trigger has been written; what the token wrote
        after the trigger is the grammar's first text."""
        self._tail = (self._tail + self._piece(token))[-256:]
        for trigger in self._after:
            at = self._tail.find(trigger.encode())
            if at < 0:
                continue
            rest = self._tail[at + len(trigger) :]
            self._tail = b""
            m = self._new()
            if rest and not m.consume_tokens(self._tok.tokenize_bytes(rest)):
                return  # the model wrote past the opening in a way the grammar refuses
            self.matcher = m
            return
