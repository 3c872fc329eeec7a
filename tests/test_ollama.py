"""`edgechat serve`'s Ollama API driven by the official `ollama` Python client, unchanged,
on loopback with SmolLM2: what Open WebUI, oterm and the ollama packages call."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from support.serving import served

ollama = pytest.importorskip("ollama")
pytestmark = [pytest.mark.model, pytest.mark.subprocess]

GREEDY = {"temperature": 0, "num_predict": 12}
HI = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def server(starter_path, new_home):
    args = ("--ctx", "1024", "--parallel", "2", "--threads", "1", "--quiet")
    with served(starter_path, new_home("ollama-home"), *args) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return ollama.Client(host=server.base)


@pytest.fixture(scope="module")
def name(client) -> str:
    return client.list().models[0].model


def test_list_show_ps_and_version(server, client, name):
    (listed,) = client.list().models
    assert name.endswith(":latest") or ":" in name
    assert listed.size > 50_000_000 and len(listed.digest) == 64
    assert listed.details.format == "gguf" and listed.details.family == "llama"
    assert listed.details.quantization_level == "Q4_1"
    assert listed.details.parameter_size.endswith("M")
    shown = client.show(name)
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 8192  # what the file was trained for
    assert shown.modelinfo["general.parameter_count"] > 100_000_000
    assert "tokenizer.ggml.tokens" in shown.modelinfo  # the vocabulary: named, not sent
    assert "num_ctx 1024" in shown.parameters.splitlines()
    assert "im_start" in shown.template and shown.capabilities == ["completion"]
    (running,) = client.ps().models
    assert running.model == name and running.context_length == 1024 and running.size_vram == 0
    with urllib.request.urlopen(server.base + "/api/version", timeout=10) as r:
        assert json.loads(r.read())["version"].count(".") == 2
    with urllib.request.urlopen(server.base + "/", timeout=10) as r:
        assert r.read().startswith(b"Ollama is running")


def test_chat_streamed_and_not_give_the_same_reply(client, name):
    whole = client.chat(model=name, messages=HI, options=GREEDY, stream=False)
    assert whole.done and whole.done_reason in ("stop", "length")
    assert whole.message.role == "assistant" and whole.message.content.strip()
    assert 0 < whole.eval_count <= 12 and whole.prompt_eval_count > 5
    for field in ("total_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(getattr(whole, field), int) and getattr(whole, field) > 0
    assert whole.total_duration >= whole.prompt_eval_duration + whole.eval_duration
    parts = list(client.chat(model=name, messages=HI, options=GREEDY, stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert parts[-1].done_reason == whole.done_reason and parts[-1].eval_count == whole.eval_count


def test_generate_streamed_raw_and_continued(client, name):
    first = client.generate(model=name, prompt="Why is the sky blue?", options=GREEDY)
    assert first.response.strip() and first.done and first.context
    streamed = list(
        client.generate(model=name, prompt="Why is the sky blue?", options=GREEDY, stream=True)
    )
    assert "".join(p.response for p in streamed) == first.response
    raw = client.generate(model=name, prompt="1, 2, 3, 4,", raw=True, options=GREEDY)
    assert raw.response.lstrip().startswith("5")  # no chat template around a raw prompt
    # The context it gave back continues the conversation: its tokens come from the cache.
    more = client.generate(
        model=name, prompt="Say it shorter.", context=first.context, options=GREEDY
    )
    assert more.prompt_eval_count < len(first.context) and len(more.context) > len(first.context)


def test_options_reach_the_sampler(client, name):
    capped = client.chat(model=name, messages=HI, options={"num_predict": 3})
    assert capped.eval_count == 3 and capped.done_reason == "length"
    seeded = {"temperature": 1.0, "seed": 42, "num_predict": 10}
    a = client.generate(model=name, prompt="Tell a story.", options=seeded)
    b = client.generate(model=name, prompt="Tell a story.", options=seeded)
    assert a.response == b.response
    text = client.generate(model=name, prompt="1, 2, 3,", raw=True, options=GREEDY).response
    stop = text[text.index("5") :][:2]  # a stop string half-way through the reply
    stopping = {**GREEDY, "stop": [stop]}
    cut = client.generate(model=name, prompt="1, 2, 3,", raw=True, options=stopping)
    assert cut.done_reason == "stop" and cut.response == text[: text.index(stop)]


def test_a_follow_up_chat_reads_only_what_is_new(client, name):
    # A question no other test asks: its first reading is whole, not a cached start.
    ask = [{"role": "user", "content": "Name three colours of the sea at dawn."}]
    first = client.chat(model=name, messages=ask, options=GREEDY)
    turns = [
        *ask,
        first.message.model_dump(exclude_none=True),
        {"role": "user", "content": "More?"},
    ]
    follow = client.chat(model=name, messages=turns, options=GREEDY)
    assert follow.prompt_eval_count < first.prompt_eval_count + first.eval_count


def test_loading_requests_and_errors_in_ollamas_shape(server, client, name):
    assert client.chat(model=name, messages=[]).done_reason == "load"
    assert client.generate(model=name, keep_alive=0).done_reason == "unload"
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="llama3:8b", messages=HI)
    assert e.value.status_code == 404 and "llama3:8b" in e.value.error
    for options in ({"temperature": 5}, {"num_ctx": 4096}):
        with pytest.raises(ollama.ResponseError) as e:
            client.chat(model=name, messages=HI, options=options)
        assert e.value.status_code == 400
    assert "--ctx 4096" in e.value.error  # the loaded context is 1024 a conversation
    with pytest.raises(ollama.ResponseError) as e:  # beyond what SmolLM2 was trained for
        client.chat(model=name, messages=HI, options={"num_ctx": 100000})
    assert e.value.status_code == 400 and "--ctx 8192" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model=name, messages=HI, think=True)
    assert e.value.status_code == 400 and "thinking" in e.value.error
    req = urllib.request.Request(server.base + "/api/chat", data=b"{oops", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 400 and set(json.loads(e.value.read())) == {"error"}
    with pytest.raises(ollama.ResponseError) as e:
        client.pull("llama3:8b")  # `ollama run` pulls a model the server lacks
    assert e.value.status_code == 404 and "edgechat models pull" in e.value.error
