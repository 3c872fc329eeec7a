"""Constrained decoding (llama/grammar.py), tool calls read back (llama/tools.py) and
`edgechat chat --schema`: the grammar is the engine's, so Engine.chat and the server's
batcher both keep a reply to its schema, whatever the temperature."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from support.cli import run_main

from edgechat.llama import grammar as g
from edgechat.llama import tools as t
from edgechat.llama.batch import Batcher, SeqRequest
from edgechat.llama.engine import Engine
from edgechat.planning.plan import RunPlan, Sampling

jsonschema = pytest.importorskip("jsonschema")

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "mood": {"enum": ["happy", "sad", "calm"]},
        "pets": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
        "home": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
        },
    },
    "required": ["name", "age", "mood", "pets", "home"],
}
ASK = [{"role": "user", "content": "Describe a person."}]
WEATHER = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
                "required": ["city", "unit"],
            },
        },
    }
]


# -- schemas and grammars (no model) ------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "foo"}, "Invalid type: foo"),
        ({"properties": 5}, "properties must be an object"),
        ({"type": "string", "pattern": "(?=a)b"}, "look-around"),
        ({"$ref": "#/$defs/missing"}, "does not exist"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_a_schema_the_grammar_cannot_take_is_one_clear_line(schema, words):
    with pytest.raises(g.GrammarError) as e:
        g.json_grammar(schema)
    message = str(e.value)
    assert words in message and "\n" not in message and "%json" not in message


def test_objects_that_list_their_properties_are_closed_but_stay_valid():
    closed = g.closed(PERSON)
    assert closed["additionalProperties"] is False
    assert closed["properties"]["home"]["additionalProperties"] is False
    assert "additionalProperties" not in closed["properties"]  # a property's name, kept
    mixed = {"allOf": [{"properties": {"a": {}}}, {"properties": {"b": {}}}]}
    assert g.closed(mixed) == mixed  # parts of one object: never closed
    assert g.closed({"properties": {}, "additionalProperties": True})["additionalProperties"]


def test_the_schema_goes_into_the_system_prompt():
    note = g.schema_note(PERSON)
    assert json.dumps(PERSON) in note
    merged = g.with_note([{"role": "system", "content": "Be brief."}, *ASK], note)
    assert merged[0]["content"].startswith("Be brief.") and note in merged[0]["content"]
    assert g.with_note(ASK, note)[0] == {"role": "system", "content": note}


def test_a_schema_the_client_already_shows_is_not_told_twice():
    """A client that writes the schema into its prompt (as LangChain and many scripts do)
    gets it once: told twice, the reply is written at a greater depth, more slowly."""
    from edgechat.serve.structured import plan

    shown = [
        {
            "role": "user",
            "content": f"Reply with JSON of this schema:\n{json.dumps(PERSON, indent=2)}",
        }
    ]
    assert g.told(shown, PERSON) == shown  # chat --schema and serve alike
    assert g.told(ASK, PERSON)[0] == {"role": "system", "content": g.schema_note(PERSON)}
    assert plan({}, "m", shown, Sampling(), schema=PERSON).messages == shown
    told = plan({}, "m", ASK, Sampling(), schema=PERSON).messages
    assert told[0] == {"role": "system", "content": g.schema_note(PERSON)}
    assert plan({}, "m", shown, Sampling(), schema=True).messages[0]["role"] == "system"


def test_tools_are_checked_and_tool_choice_picks():
    tools = t.check_tools(WEATHER)
    assert t.choose(tools, "auto") == (tools, False)
    assert t.choose(tools, "none") == ([], False)
    assert t.choose(tools, "required") == (tools, True)
    named = {"type": "function", "function": {"name": "get_weather"}}
    assert t.choose(tools, named) == (tools, True)
    for bad, words in [
        ({"type": "function"}, "must be a list"),
        ([{"type": "retrieval"}], "not a function"),
        ([{"type": "function", "function": {"name": "a b"}}], "letters, digits"),
        ([{"type": "function", "function": {"name": "f", "parameters": 3}}], "JSON schema"),
        ([*WEATHER, *WEATHER], "given twice"),
    ]:
        with pytest.raises(t.ToolError, match=words):
            t.check_tools(bad)
    with pytest.raises(t.ToolError, match="tool_choice"):
        t.choose(tools, {"type": "function", "function": {"name": "nope"}})


def test_a_template_says_whether_and_how_it_calls_tools():
    assert t.shape_of("{% for m in messages %}{{ m.content }}{% endfor %}") is None
    assert t.shape_of("{% if tools %}<tool_call>{% endif %}") == "hermes"
    assert t.shape_of("{% if tools %}[TOOL_CALLS]{% endif %}") == "mistral"
    assert t.shape_of("{% if tools %}<|python_tag|>{% endif %}") == "llama3"
    assert t.thinks("{% if enable_thinking %}{% endif %}")


REPLY = 'Let me look. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'


@pytest.mark.parametrize("size", [1, 3, 1000])
def test_calls_are_read_back_whole_and_streamed_in_pieces_of_any_size(size):
    text = REPLY + "</tool_call> Done <tool"
    whole = t.parse("hermes", text)
    assert whole == (
        "Let me look.  Done <tool",
        [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
    )
    stream = t.CallStream("hermes")
    events = []
    for i in range(0, len(text), size):
        events += stream.feed(text[i : i + size])
    events += stream.end()
    calls = [e[1] for e in events if e[0] == "call"]
    shown = "".join(e[1] for e in events if e[0] == "text")
    assert calls == whole[1] and shown == "Let me look.  Done <tool"
    assert "<tool_call>" not in shown  # the opening was held back, never shown as text


def test_other_shapes_and_a_call_that_does_not_parse():
    assert t.parse("mistral", '[{"name": "f", "arguments": {"a": 1}}]')[1] == [
        {"name": "f", "arguments": {"a": 1}}
    ]
    assert t.parse("llama3", '{"name": "f", "parameters": {"a": 1}}')[1] == [
        {"name": "f", "arguments": {"a": 1}}
    ]
    broken = "<tool_call>{not json</tool_call>"
    assert t.parse("hermes", broken) == (broken, [])  # kept as text, never lost


# -- on the real model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def slots(starter_path):
    """Three sequences, as `serve --parallel 3`."""
    with Engine(RunPlan(starter_path, n_ctx=1024, n_threads=1, n_seq=3)) as eng:
        yield eng


def constrained(schema, **changes) -> Sampling:
    return Sampling(**{"max_tokens": 160, **changes, "grammar": g.json_grammar(schema)})


@pytest.mark.parametrize("temperature", [0.0, 0.8, 1.5])
def test_every_reply_matches_its_schema_at_any_temperature(engine, temperature):
    messages = g.with_note(ASK, g.schema_note(PERSON))
    for seed in (1, 2):
        s = constrained(PERSON, temperature=temperature, seed=seed)
        text = engine.chat(messages, s).collect()
        assert engine.last_stats.finish == "stop", text
        jsonschema.validate(json.loads(text), PERSON)


def test_a_repeat_penalty_keeps_the_schema_too(engine):
    # A penalty keeps history in the chain: the mask is applied before sampling then.
    s = constrained(PERSON, temperature=1.0, seed=3, repeat_penalty=1.2)
    text = engine.chat(g.with_note(ASK, g.schema_note(PERSON)), s).collect()
    assert engine.last_stats.finish == "stop", text
    jsonschema.validate(json.loads(text), PERSON)


def test_json_means_a_json_object(engine):
    for seed in (1, 2, 3):
        s = constrained(None, temperature=0.8, seed=seed, max_tokens=60)
        text = engine.chat([{"role": "user", "content": "Hello"}], s).collect()
        assert text.startswith("{")  # an object from its first character
        if engine.last_stats.finish == "stop":  # unbounded strings may run to the cap
            assert isinstance(json.loads(text), dict)


def test_constrained_and_free_replies_share_the_batch(slots):
    engine = slots
    batcher = Batcher(engine)
    replies = []
    for schema in (PERSON, None, "free"):
        s = Sampling(temperature=0.9, seed=7, max_tokens=160)
        if schema != "free":
            s = replace(s, grammar=g.json_grammar(schema))
        tokens, _ = engine.chat_tokens(g.with_note(ASK, g.schema_note(PERSON)), s, False)
        parts: list[str] = []
        ends: list = []
        batcher.admit(SeqRequest(tokens, s, parts.append, lambda st, err, e=ends: e.append(err)))
        replies.append((schema, parts, ends))
    while batcher.busy:
        batcher.step()
    for schema, parts, ends in replies:
        assert ends == [None]
        if schema == PERSON:
            jsonschema.validate(json.loads("".join(parts)), PERSON)
        elif schema is None:
            assert isinstance(json.loads("".join(parts)), dict)


def test_a_lazy_call_grammar_waits_for_the_opening_then_holds_the_call(engine):
    grammar = t.call_grammar("hermes", t.check_tools(WEATHER))
    lazy = Sampling(temperature=0.0, max_tokens=60, grammar=grammar, grammar_after=("<tool_call>",))
    free = Sampling(temperature=0.0, max_tokens=60)
    ask = [{"role": "user", "content": "Say hello."}]
    assert engine.chat(ask, lazy).collect() == engine.chat(ask, free).collect()  # no opening
    # Prefilled with the opening (as tool_choice does), the rest is a valid call.
    tokens, _ = engine.chat_tokens(ask, lazy, False, prefill="<tool_call>\n")
    batcher = Batcher(engine)
    parts: list[str] = []
    forced = replace(lazy, grammar_after=())
    batcher.admit(SeqRequest(tokens, forced, parts.append, lambda st, err: None))
    while batcher.busy:
        batcher.step()
    (call,) = t.parse("hermes", "<tool_call>\n" + "".join(parts))[1]
    assert call["name"] == "get_weather"
    jsonschema.validate(call["arguments"], WEATHER[0]["function"]["parameters"])


def test_chat_schema_prints_json_that_matches(starter_path, tmp_path):
    schema = tmp_path / "city.json"
    schema.write_text(
        json.dumps(
            {
                "type": "object",
                "properties": {"capital": {"type": "string", "maxLength": 30}},
                "required": ["capital"],
            }
        )
    )
    ran = run_main("chat", "-m", str(starter_path), "--schema", str(schema), "Capital of France?")
    assert ran.returncode == 0, ran.stderr
    assert set(json.loads(ran.stdout)) == {"capital"}
    ran = run_main(
        "chat", "-m", str(starter_path), "--json", "--schema", str(schema), input="Spain?"
    )
    record = json.loads(ran.stdout)
    assert ran.returncode == 0 and record["prompt"] == "Spain?" and "capital" in record["reply"]
    cut = run_main(
        "chat", "-m", str(starter_path), "--max-tokens", "3", "--schema", str(schema), "x"
    )
    assert cut.returncode == 1 and "raise --max-tokens" in cut.stderr and cut.stdout == ""


def test_chat_schema_refuses_bad_schemas_before_loading(tmp_path):
    for given, words in [
        ('{"type": "foo"}', "Invalid type"),
        ("{oops", "not valid JSON"),
        (str(tmp_path / "missing.json"), "give a JSON schema"),
    ]:
        ran = run_main("chat", "-m", str(tmp_path / "no-model.gguf"), "--schema", given, "x")
        assert ran.returncode == 1 and words in ran.stderr and "Traceback" not in ran.stderr
