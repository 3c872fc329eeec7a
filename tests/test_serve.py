"""`edgechat serve` driven by the official openai client, on loopback, with SmolLM2.

Two real servers run in child processes: one open on loopback with room in its queue,
and one bound beyond loopback, with an API key from the keyring and a queue of one.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from support.filekeyring import keyring_env
from support.serving import edgechat_serve, served

from edgechat import cli

openai = pytest.importorskip("openai")
pytestmark = [pytest.mark.model, pytest.mark.subprocess]

KEY = "edgechat-test-key-7f3a9c"
COUNT = "1, 2, 3, 4,"  # SmolLM2 goes on counting: long, predictable replies


def health(url: str, key: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    req = urllib.request.Request(url.removesuffix("/v1") + "/health", headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def wait_idle(url: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = health(url)
        if not state["busy"] and not state["waiting"]:
            return state
        time.sleep(0.05)
    raise AssertionError(f"the server stayed busy: {health(url)}")


@pytest.fixture(scope="module")
def server(starter_path, new_home):
    args = ("--ctx", "1024", "--parallel", "4", "--threads", "1", "--quiet")
    with served(starter_path, new_home("serve-home"), *args) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def model_id(client) -> str:
    return client.models.list().data[0].id


def test_models_and_health(server, client, model_id):
    models = client.models.list().data
    assert [m.id for m in models] == [model_id]
    assert models[0].model_extra["meta"]["n_ctx"] == 1024
    assert client.models.retrieve(model_id).id == model_id
    state = health(server.url)
    assert state["status"] == "ok" and state["model"] == model_id


def test_chat_not_streamed(client, model_id):
    r = client.chat.completions.create(
        model=model_id,
        messages=[{"role": "user", "content": "Name three colours."}],
        max_tokens=8,
        temperature=0,
    )
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert 0 < r.usage.completion_tokens <= 8 and r.usage.prompt_tokens > 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_streamed_with_usage(client, model_id):
    stream = client.chat.completions.create(
        model=model_id,
        messages=[
            {"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": [{"type": "text", "text": "Name three colours."}]},
        ],
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert "".join(pieces).strip()
    assert finishes[-1] in ("stop", "length") and all(f is None for f in finishes[:-1])
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and len(pieces) <= usage.completion_tokens <= 10
    assert len({c.id for c in chunks}) == 1


def test_max_tokens_and_stop_strings(client, model_id):
    r = client.completions.create(model=model_id, prompt=COUNT, max_tokens=5, temperature=0)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 5
    full = client.completions.create(model=model_id, prompt=COUNT, max_tokens=40, temperature=0)
    assert " 8," in full.choices[0].text, full.choices[0].text  # it counts on
    cut = client.completions.create(
        model=model_id, prompt=COUNT, max_tokens=40, temperature=0, stop=[" 8,", "never"]
    )
    text = cut.choices[0].text
    assert cut.choices[0].finish_reason == "stop"
    assert full.choices[0].text.startswith(text) and "8" not in text and " 7," in text
    streamed = client.completions.create(
        model=model_id, prompt=COUNT, max_tokens=40, temperature=0, stop=" 8,", stream=True
    )
    parts = list(streamed)
    assert "".join(p.choices[0].text for p in parts) == text
    assert parts[-1].choices[0].finish_reason == "stop"


def test_seed_repeats_a_sampled_reply(client, model_id):
    def sample(first_word: str, seed: int) -> str:
        r = client.completions.create(
            model=model_id, prompt=f"{first_word} is", max_tokens=12, temperature=1.0, seed=seed
        )
        return r.choices[0].text

    # A different first word between them: each prompt is evaluated afresh, the same way.
    a = sample("Paris", 42)
    sample("Rome", 7)
    assert sample("Paris", 42) == a


def test_errors_in_openai_shape(server, client, model_id):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert e.value.code == "model_not_found"
    for bad in ({"temperature": 5}, {"n": 2}, {"top_p": 0}, {"max_tokens": 0}):
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(
                model=model_id, messages=[{"role": "user", "content": "hi"}], **bad
            )
        assert e.value.param == next(iter(bad))
    # llama-server's extensions, under the same bounds as the settings.
    for bad in ({"repeat_penalty": 0.5}, {"top_k": -1}, {"min_p": 2}):
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(
                model=model_id, messages=[{"role": "user", "content": "hi"}], extra_body=bad
            )
        assert e.value.param == next(iter(bad))
    client.chat.completions.create(
        model=model_id,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=2,
        extra_body={"repeat_penalty": 1.0, "top_k": 20, "min_p": 0.1},
    )
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=model_id, messages=[])
    long = "word " * 2000  # beyond the 1024-token context
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as e:
            client.chat.completions.create(
                model=model_id, messages=[{"role": "user", "content": long}], stream=stream
            )
        assert e.value.status_code == 413 and e.value.code == "context_length_exceeded"
    req = urllib.request.Request(server.url + "/chat/completions", data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 400 and json.loads(e.value.read())["error"]["code"] == "invalid_json"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(server.url + "/nothing", timeout=10)
    assert e.value.code == 404 and "error" in json.loads(e.value.read())


def test_a_client_that_leaves_stops_its_generation(server, client, model_id):
    before = wait_idle(server.url)
    stream = client.completions.create(
        model=model_id, prompt=COUNT, max_tokens=1000, temperature=0, stream=True
    )
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    after = wait_idle(server.url)
    assert after["cancelled"] == before["cancelled"] + 1  # stopped before its 1000 tokens
    assert after["served"] == before["served"]
    r = client.completions.create(model=model_id, prompt=COUNT, max_tokens=4, temperature=0)
    assert r.usage.completion_tokens == 4  # and the engine serves the next one


WORDS = "Apples Bread Cats Dogs Eggs Fish Grapes Horses Ice Jam Kites Lamps Maps Nuts Owls Pens"
WORDS += " Quilts Roses Ships Trees"


def test_twenty_concurrent_streams_lose_and_mix_nothing(server, client, model_id):
    prompts = [f"{w} are" for w in WORDS.split()]
    assert len(prompts) == 20

    def one(prompt: str, stream: bool) -> tuple[str, str, int]:
        r = client.completions.create(
            model=model_id, prompt=prompt, max_tokens=6, temperature=0, stream=stream
        )
        if not stream:
            return r.choices[0].text, r.choices[0].finish_reason, r.usage.prompt_tokens
        parts = list(r)
        return "".join(p.choices[0].text for p in parts), parts[-1].choices[0].finish_reason, 0

    # Each prompt starts with its own word, so none reuses another's cache: the same
    # prompt gives the same greedy reply whatever ran before it.
    expected = [one(p, False) for p in prompts]
    one("Zebras are", False)  # not the last of them: the first streamed one starts afresh
    with ThreadPoolExecutor(20) as pool:
        got = list(pool.map(lambda p: one(p, True), prompts))
    assert [g[0] for g in got] == [e[0] for e in expected]
    assert all(g[1] in ("stop", "length") for g in got)
    assert len({e[0] for e in expected}) > 10  # the replies really differ from each other
    assert health(server.url)["refused"] == 0


# -- several replies at once (llama/batch.py) ------------------------------------------

TOPICS = ["apples", "the sea", "Rome", "owls"]


def ask(client, model_id: str, topic: str, tokens: int = 16, leave_after: int = 0) -> str:
    """A streamed greedy chat about ``topic``; with ``leave_after``, the client goes away
    after that many pieces."""
    stream = client.chat.completions.create(
        model=model_id,
        messages=[{"role": "user", "content": f"Tell me about {topic}."}],
        max_tokens=tokens,
        temperature=0,
        stream=True,
    )
    text = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
            if len(text) == leave_after:
                stream.close()
                break
    return "".join(text)


def most_active(url: str, until) -> int:
    """The most replies the server generated at once while ``until`` was not done."""
    seen = 0
    while not until.done():
        seen = max(seen, health(url)["active"])
        time.sleep(0.05)
    return seen


def test_four_clients_at_once_each_get_what_they_would_alone(server, client, model_id):
    alone = [ask(client, model_id, t) for t in TOPICS]  # one after the other
    with ThreadPoolExecutor(5) as pool:
        together = pool.submit(lambda: list(pool.map(lambda t: ask(client, model_id, t), TOPICS)))
        assert most_active(server.url, together) >= 2  # they really shared decodes
        assert together.result() == alone
    assert len(set(alone)) == 4


def test_a_client_leaving_mid_batch_frees_its_slot_and_the_others_finish(server, client, model_id):
    alone = {t: ask(client, model_id, t) for t in TOPICS[:2]}
    before = wait_idle(server.url)
    with ThreadPoolExecutor(3) as pool:
        leaver = pool.submit(ask, client, model_id, TOPICS[2], 1000, 3)
        others = [pool.submit(ask, client, model_id, t) for t in TOPICS[:2]]
        assert len(leaver.result()) > 0
        assert [f.result() for f in others] == list(alone.values())
    after = wait_idle(server.url)
    assert after["cancelled"] == before["cancelled"] + 1  # stopped long before 1000 tokens
    assert after["served"] == before["served"] + 2 and after["active"] == 0


def test_a_prompt_beyond_a_slots_context_is_refused_and_the_others_go_on(server, client, model_id):
    expected = ask(client, model_id, TOPICS[0], 24)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(ask, client, model_id, TOPICS[0], 24)
        deadline = time.monotonic() + 30
        while not health(server.url)["active"] and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(openai.APIStatusError) as e:
            client.chat.completions.create(
                model=model_id, messages=[{"role": "user", "content": "word " * 2000}]
            )
        assert e.value.status_code == 413  # each slot has --ctx 1024: this needs 2000
        assert running.result() == expected


def test_a_follow_up_reads_only_what_is_new(client, model_id):
    turn = [{"role": "user", "content": "Name a fruit."}]
    first = client.chat.completions.create(
        model=model_id, messages=turn, max_tokens=16, temperature=0
    )
    turn += [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "And a vegetable?"},
    ]
    follow = client.chat.completions.create(
        model=model_id, messages=turn, max_tokens=8, temperature=0
    )
    cached = follow.usage.prompt_tokens_details.cached_tokens
    assert cached >= first.usage.prompt_tokens  # the first turn came from its slot's cache
    assert follow.model_extra["timings"]["prompt_n"] == follow.usage.prompt_tokens - cached


# -- a server beyond loopback: the API key rule, a full queue, Ctrl-C -------------------


def test_beyond_loopback_needs_a_key(monkeypatch, capsys):
    from edgechat.models import credentials

    monkeypatch.delenv("EDGECHAT_API_KEY", raising=False)
    monkeypatch.setattr(credentials, "keyring_backend", lambda: None)  # no stored key either
    assert cli.main(["serve", "--host", "0.0.0.0"]) == 1
    err = capsys.readouterr().err
    assert "API key" in err and "0.0.0.0" in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def keyed(starter_path, tmp_path_factory):
    """On 0.0.0.0 with the key from the keyring (a file-backed one), one place in the queue."""
    from support.cli import run_cli

    tmp = tmp_path_factory.mktemp("keyed")
    env = {"EDGECHAT_HOME": str(tmp), **keyring_env(tmp / "keyring.json")}
    stored = run_cli("serve", "--store-key", env={**env, "EDGECHAT_API_KEY": KEY})
    assert stored.returncode == 0, stored.stderr
    srv = edgechat_serve(
        starter_path,
        "--host",
        "0.0.0.0",
        "--queue",
        "1",
        "--parallel",
        "1",  # one reply at a time: the queue tests need a request that waits
        "--ctx",
        "1024",
        "--threads",
        "1",
        env=env,
    )
    srv.env = env
    yield srv
    srv.stop()


def test_the_key_is_required_and_never_logged(keyed):
    assert "API key required (from keyring)" in keyed.log
    assert "context 1024 · " in keyed.log and "1 replies" not in keyed.log  # one: no count
    for key in (None, "wrong-key"):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        req = urllib.request.Request(keyed.url + "/models", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 401 and e.value.headers["WWW-Authenticate"] == "Bearer"
    bad = openai.OpenAI(base_url=keyed.url, api_key="wrong-key", max_retries=0)
    with bad, pytest.raises(openai.AuthenticationError):
        bad.completions.create(model="x", prompt="hi", max_tokens=2)
    with openai.OpenAI(base_url=keyed.url, api_key=KEY, max_retries=0) as good:
        r = good.completions.create(model=good.models.list().data[0].id, prompt="Hi", max_tokens=2)
        assert r.usage.completion_tokens == 2
    assert health(keyed.url) == {"status": "ok"}  # without the key: alive, nothing more
    assert health(keyed.url, KEY)["slots"] == 1  # with it: the model and the counters
    assert "POST /v1/completions" in keyed.log  # requests are logged ...
    assert KEY not in keyed.log and "wrong-key" not in keyed.log  # ... keys are not


def test_ollamas_api_takes_the_same_key(keyed):
    ollama = pytest.importorskip("ollama")
    base = keyed.url.removesuffix("/v1")
    with pytest.raises(ollama.ResponseError) as e:
        ollama.Client(host=base).list()
    assert e.value.status_code == 401 and "API key" in e.value.error  # Ollama's error shape
    with urllib.request.urlopen(base + "/", timeout=10) as r:  # "is it up?" needs no key
        assert b"Ollama is running" in r.read()
    good = ollama.Client(host=base, headers={"Authorization": f"Bearer {KEY}"})
    assert [m.model for m in good.list().models] == [m.model for m in good.ps().models]


def test_a_full_queue_answers_503_with_retry_after(keyed):
    with openai.OpenAI(base_url=keyed.url, api_key=KEY, max_retries=0) as c:
        model = c.models.list().data[0].id
        running = c.completions.create(
            model=model, prompt=COUNT, max_tokens=1000, temperature=0, stream=True
        )
        next(iter(running))  # generating now
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(
                c.completions.create, model=model, prompt="Hi", max_tokens=3, temperature=0
            )
            deadline = time.monotonic() + 30
            while health(keyed.url, KEY)["waiting"] < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            with pytest.raises(openai.APIStatusError) as e:
                c.completions.create(model=model, prompt="Hi", max_tokens=3)
            assert e.value.status_code == 503 and e.value.code == "server_busy"
            assert int(e.value.response.headers["Retry-After"]) >= 1
            running.close()  # makes room: the waiting request is answered in full
            assert waiting.result(timeout=60).usage.completion_tokens == 3
    assert health(keyed.url, KEY)["refused"] == 1


def test_a_waiting_client_that_leaves_is_dropped_from_the_queue(keyed):
    import socket

    with openai.OpenAI(base_url=keyed.url, api_key=KEY, max_retries=0) as c:
        model = c.models.list().data[0].id
        running = c.completions.create(
            model=model, prompt=COUNT, max_tokens=1000, temperature=0, stream=True
        )
        next(iter(running))
        before = health(keyed.url, KEY)
        body = json.dumps({"model": model, "prompt": "Hi", "max_tokens": 3}).encode()
        host, port = keyed.url.split("//")[1].split("/")[0].split(":")
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(
                b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            deadline = time.monotonic() + 30
            while health(keyed.url, KEY)["waiting"] < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert health(keyed.url, KEY)["waiting"] == 1
        deadline = time.monotonic() + 30
        while health(keyed.url, KEY)["waiting"] and time.monotonic() < deadline:
            time.sleep(0.02)
        after = health(keyed.url, KEY)
        assert after["waiting"] == 0 and after["cancelled"] == before["cancelled"] + 1
        assert after["busy"]  # the running reply goes on
        running.close()


def test_ctrl_c_stops_a_reply_and_shuts_down_cleanly(keyed):
    with openai.OpenAI(base_url=keyed.url, api_key=KEY, max_retries=0) as c:
        stream = c.completions.create(
            model=c.models.list().data[0].id, prompt=COUNT, max_tokens=1000, stream=True
        )
        next(iter(stream))
        keyed.proc.send_signal(signal.SIGINT)
        rest = list(stream)  # ends early: the server stops generating and closes it
        assert len(rest) < 900
    assert keyed.stop() == 130  # interrupted, as every edgechat command reports it
    assert "Traceback" not in keyed.log
