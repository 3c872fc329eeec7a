"""What clients ask of an Ollama or OpenAI server beyond chat, through the official `ollama`
and `openai` clients and LangChain's ChatOllama: structured output, tool calls (forced with
tool_choice, streamed and not, a tool result continuing the chat), capabilities, think,
embeddings, pull, keep_alive unloading, and one clear error in each API's shape for what
cannot be done.

SmolLM2's own template takes no tools: the server here runs a copy of it whose ChatML
template takes tools and has a thinking switch (the `tools_model_path` fixture)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from support.serving import edgechat_serve, served

ollama = pytest.importorskip("ollama")
openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")
pytestmark = [pytest.mark.model, pytest.mark.subprocess]

ORDER = {
    "type": "object",
    "properties": {
        "customer": {"type": "string", "maxLength": 20},
        "size": {"enum": ["small", "medium", "large"]},
        "items": {
            "type": "array",
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 16},
                    "count": {"type": "integer", "minimum": 1, "maximum": 9},
                },
                "required": ["name", "count"],
            },
        },
    },
    "required": ["customer", "size", "items"],
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 24},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}
ASK = [{"role": "user", "content": "I'd like two pizzas, medium, for Ann."}]
RAIN = [{"role": "user", "content": "What is the weather in Paris?"}]
OPTS = {"temperature": 0.8, "num_predict": 120, "seed": 4}


@pytest.fixture(scope="module")
def server(tools_model_path, new_home):
    args = ("--ctx", "1024", "--parallel", "2", "--threads", "1", "--quiet")
    with served(tools_model_path, new_home("tools-home"), *args) as srv:
        yield srv


@pytest.fixture(scope="module")
def oc(server):
    return ollama.Client(host=server.base)


@pytest.fixture(scope="module")
def ai(server):
    with openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def name(oc) -> str:
    return oc.list().models[0].model


def test_capabilities_follow_the_template(oc, name):
    assert oc.show(name).capabilities == ["completion", "tools", "thinking"]


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_format_schema_and_json(oc, name, stream):
    for fmt, check in [(ORDER, lambda v: jsonschema.validate(v, ORDER)), ("json", dict)]:
        if stream:
            parts = list(oc.chat(model=name, messages=ASK, format=fmt, options=OPTS, stream=True))
            text, reason = "".join(p.message.content for p in parts), parts[-1].done_reason
        else:
            r = oc.chat(model=name, messages=ASK, format=fmt, options=OPTS)
            text, reason = r.message.content, r.done_reason
        if fmt == "json" and reason == "length":
            continue  # any object: its strings have no bound; the schema's do
        assert reason == "stop"
        check(json.loads(text))
    r = oc.generate(model=name, prompt="An order for Bo.", format=ORDER, options=OPTS)
    jsonschema.validate(json.loads(r.response), ORDER)


@pytest.mark.parametrize("stream", [False, True])
def test_openai_response_format(ai, stream):
    model = ai.models.list().data[0].id
    formats = [
        {"type": "json_schema", "json_schema": {"name": "order", "schema": ORDER}},
        {"type": "json_object"},
    ]
    for fmt in formats:
        r = ai.chat.completions.create(
            model=model,
            messages=ASK,
            response_format=fmt,
            temperature=0.8,
            seed=5,
            max_tokens=120,
            stream=stream,
        )
        if stream:
            chunks = list(r)
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        else:
            text, finish = r.choices[0].message.content, r.choices[0].finish_reason
        if fmt["type"] == "json_object" and finish == "length":
            continue
        assert finish == "stop"
        value = json.loads(text)
        if fmt["type"] == "json_schema":
            jsonschema.validate(value, ORDER)
        assert isinstance(value, dict)


@pytest.mark.parametrize("stream", [False, True])
def test_openai_forced_tool_call_and_its_result(ai, stream):
    model = ai.models.list().data[0].id
    choice = {"type": "function", "function": {"name": "get_weather"}}
    r = ai.chat.completions.create(
        model=model,
        messages=RAIN,
        tools=[TIME, WEATHER],
        tool_choice=choice,
        temperature=0.9,
        max_tokens=80,
        stream=stream,
    )
    if stream:
        chunks = list(r)
        deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
        (call,) = deltas
        name, args, call_id = call.function.name, call.function.arguments, call.id
    else:
        message = r.choices[0].message
        assert r.choices[0].finish_reason == "tool_calls" and message.content is None
        (call,) = message.tool_calls
        name, args, call_id = call.function.name, call.function.arguments, call.id
    assert name == "get_weather" and call_id.startswith("call_")
    jsonschema.validate(json.loads(args), WEATHER["function"]["parameters"])
    turn = {
        "role": "assistant",
        "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
        ],
    }
    result = {"role": "tool", "tool_call_id": call_id, "content": "18 celsius, sunny"}
    more = ai.chat.completions.create(
        model=model,
        messages=[*RAIN, turn, result],
        tools=[WEATHER],
        tool_choice="none",
        temperature=0,
        max_tokens=20,
    )
    assert more.choices[0].message.content and more.usage.prompt_tokens > 60


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_required_tool_call_and_its_result(oc, name, server, stream):
    # The ollama client has no tool_choice; Ollama's API ignores it: sent by hand here.
    body = {
        "model": name,
        "messages": RAIN,
        "tools": [WEATHER],
        "tool_choice": "required",
        "stream": stream,
        "options": OPTS,
    }
    req = urllib.request.Request(server.base + "/api/chat", json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=120) as r:
        lines = [json.loads(line) for line in r.read().splitlines() if line.strip()]
    calls = [c for line in lines for c in line["message"].get("tool_calls") or []]
    (call,) = calls
    assert call["function"]["name"] == "get_weather" and lines[-1]["done"]
    jsonschema.validate(call["function"]["arguments"], WEATHER["function"]["parameters"])
    turn = {"role": "assistant", "content": "", "tool_calls": calls}
    result = {"role": "tool", "content": "18 celsius", "tool_name": "get_weather"}
    more = oc.chat(model=name, messages=[*RAIN, turn, result], options={"num_predict": 10})
    assert more.done and more.message.content  # its cached start is not counted: no size


def test_think_switch_and_a_raw_prompt_takes_no_format(oc, name, server):
    plain = oc.chat(model=name, messages=RAIN, think=False, options={"num_predict": 5})
    assert plain.done and plain.message.thinking is None
    body = {"model": name, "prompt": "Hi", "format": "json", "raw": True, "stream": False}
    req = urllib.request.Request(server.base + "/api/generate", json.dumps(body).encode())
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 400


def test_embeddings_in_both_apis(oc, ai, name):
    model = ai.models.list().data[0].id
    e = ai.embeddings.create(model=model, input=["a cat on a mat", "a cat on a rug", "tax law"])
    v = [d.embedding for d in e.data]
    assert len(v) == 3 and len(v[0]) == 576 and e.usage.prompt_tokens > 6

    def dot(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert abs(dot(v[0], v[0]) - 1) < 1e-3  # normalised
    assert dot(v[0], v[1]) > dot(v[0], v[2])
    floats = ai.embeddings.create(model=model, input="a cat on a mat", encoding_format="float")
    assert max(abs(x - y) for x, y in zip(floats.data[0].embedding, v[0], strict=True)) < 1e-5
    got = oc.embed(model=name, input=["a cat on a mat"])
    assert max(abs(x - y) for x, y in zip(got.embeddings[0], v[0], strict=True)) < 1e-5
    assert len(oc.embeddings(model=name, prompt="hello").embedding) == 576


def test_pull_answers_for_this_model_and_refuses_others(oc, name):
    assert oc.pull(name).status == "success"
    assert oc.pull(name.removesuffix(":latest")).status == "success"  # as Home Assistant asks
    with pytest.raises(ollama.ResponseError) as e:
        oc.pull("llama3:8b")
    assert e.value.status_code == 404 and "edgechat models pull" in e.value.error


def test_bad_input_is_one_clear_error_in_each_apis_shape(oc, ai, name, server):
    model = ai.models.list().data[0].id
    for fmt in ({"type": "foo"}, {"type": "string", "pattern": "(?<=a)b"}):
        with pytest.raises(ollama.ResponseError) as e:
            oc.chat(model=name, messages=ASK, format=fmt)
        assert e.value.status_code == 400 and "\n" not in e.value.error
    body = json.dumps({"model": name, "messages": ASK, "format": "yaml"}).encode()
    with pytest.raises(urllib.error.HTTPError) as e:  # the client refuses to send it
        urllib.request.urlopen(urllib.request.Request(server.base + "/api/chat", body), timeout=30)
    assert e.value.code == 400 and "format" in json.loads(e.value.read())["error"]
    for rf in (
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "foo"}}},
        {"type": "json_schema", "json_schema": {"name": "x"}},
        {"type": "xml"},
    ):
        with pytest.raises(openai.BadRequestError) as e:
            ai.chat.completions.create(model=model, messages=ASK, response_format=rf)
        assert e.value.body["message"] and "\n" not in e.value.body["message"]
    for tools in ([{"type": "function"}], [{"name": "f"}], {"type": "function"}):
        with pytest.raises(openai.BadRequestError) as e:
            ai.chat.completions.create(model=model, messages=ASK, tools=tools)
        assert "tools" in e.value.body["message"]
        req = urllib.request.Request(
            server.base + "/api/chat",
            json.dumps({"model": name, "messages": ASK, "tools": tools}).encode(),
        )
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=30)
        assert e.value.code == 400 and set(json.loads(e.value.read())) == {"error"}
    with pytest.raises(openai.BadRequestError):
        ai.chat.completions.create(
            model=model,
            messages=ASK,
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    with pytest.raises(ollama.ResponseError) as e:
        oc.chat(model=name, messages=ASK, keep_alive="soon")
    assert e.value.status_code == 400 and "keep_alive" in e.value.error


def test_langchain_structured_output_and_bind_tools(server, name):
    chat_ollama = pytest.importorskip("langchain_ollama")
    from pydantic import BaseModel, Field

    class Order(BaseModel):
        customer: str = Field(max_length=20)
        pizzas: int = Field(ge=1, le=9)

    llm = chat_ollama.ChatOllama(model=name, base_url=server.base, temperature=0.5, num_predict=80)
    order = llm.with_structured_output(Order).invoke("Two pizzas for Ann, please.")
    assert isinstance(order, Order)
    bound = llm.bind_tools([WEATHER])
    reply = bound.invoke("What is the weather in Paris?")
    for call in reply.tool_calls:  # the model may answer in words; any call it makes is valid
        assert call["name"] == "get_weather"
        jsonschema.validate(call["args"], WEATHER["function"]["parameters"])


def test_a_model_without_tools_says_so(starter_path, tmp_path):
    srv = edgechat_serve(
        starter_path,
        *("--ctx", "512", "--threads", "1", "--quiet", "--keep-alive", "1s"),
        env={"EDGECHAT_HOME": str(tmp_path)},
    )
    try:
        client = ollama.Client(host=srv.base)
        name = client.list().models[0].model
        assert client.show(name).capabilities == ["completion"]
        with pytest.raises(ollama.ResponseError) as e:
            client.chat(model=name, messages=RAIN, tools=[WEATHER])
        assert e.value.status_code == 400 and "does not support tools" in e.value.error
        with pytest.raises(ollama.ResponseError) as e:
            client.chat(model=name, messages=RAIN, think=True)
        assert e.value.status_code == 400 and "thinking" in e.value.error
        with openai.OpenAI(base_url=srv.url, api_key="x", max_retries=0) as ai:
            with pytest.raises(openai.BadRequestError) as e:
                ai.chat.completions.create(model=name, messages=RAIN, tools=[WEATHER])
            assert "does not support tools" in e.value.body["message"]
        # --keep-alive 1s: once idle that long the model is gone; the next request loads it.
        client.chat(model=name, messages=RAIN, options={"num_predict": 4})
        deadline = time.monotonic() + 30
        while client.ps().models and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.ps().models == []
        assert client.chat(model=name, messages=RAIN, options={"num_predict": 4}).done
    finally:
        assert srv.stop() in (0, 130)


def test_keep_alive_gives_the_memory_back_and_the_next_request_loads(oc, name, server):
    psutil = pytest.importorskip("psutil")
    proc = psutil.Process(server.proc.pid)

    def rss() -> int:  # the server's process tree: true too once the model runs in a child
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])

    floors = []
    for _ in range(4):  # a constrained reply each time: its grammar's view of the vocabulary
        oc.chat(model=name, messages=RAIN, tools=[WEATHER], options=OPTS, keep_alive=-1)
        (running,) = oc.ps().models
        assert running.expires_at.year == 9999  # -1: kept while the server runs
        loaded = rss()
        assert oc.generate(model=name, keep_alive=0).done_reason == "unload"
        deadline = time.monotonic() + 30
        while oc.ps().models and time.monotonic() < deadline:
            time.sleep(0.1)
        assert oc.ps().models == []
        # /api/ps drops the model once its memory is back: most of the 98 MB model and
        # its cache (47 MB) are gone at that moment, not seconds later
        floors.append(rss())
        assert loaded - floors[-1] > 90 * 2**20
    # Nothing of an unloaded model stays behind: each cycle kept ~20 MB (llguidance's view
    # of the vocabulary). From the second cycle on (the first warms what stays), the floor
    # may wander by the C heap's fragments, and by the server's own objects.
    assert floors[-1] - floors[1] < 25 * 2**20, [f >> 20 for f in floors]
    reply = oc.chat(model=name, messages=RAIN, options={"num_predict": 8}, keep_alive="10m")
    assert reply.done and reply.message.content
    (running,) = oc.ps().models
    left = running.expires_at.timestamp() - time.time()
    assert 500 < left <= 600
