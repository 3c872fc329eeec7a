"""A real `edgechat serve --parallel 4` shared by several clients, one of them hostile,
driven by the official openai and ollama clients, httpx and raw sockets (issue 30,
items 1, 3, 4, 5 and 6): one client's mistakes or tricks cost that client alone.

Each test failed before its fix (the replies cut, caches cleared, tracebacks logged,
another's prompt learned from ``cached_tokens``); the other clients' replies are checked
against what the same request gets alone."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from support.serving import served

openai = pytest.importorskip("openai")
ollama = pytest.importorskip("ollama")
pytestmark = [pytest.mark.model, pytest.mark.subprocess]

COUNT = "1, 2, 3, 4,"


@pytest.fixture(scope="module")
def server(starter_path, new_home):
    args = ("--ctx", "1024", "--parallel", "4", "--threads", "1")
    with served(starter_path, new_home("hostile-home"), *args) as srv:
        yield srv


def client(server, source: str = "127.0.0.1"):
    """An openai client whose connections come from ``source`` (another loopback
    address stands for another machine of the household)."""
    http = httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=120)
    return openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, http_client=http)


@pytest.fixture(scope="module")
def model(server) -> str:
    with client(server) as c:
        return c.models.list().data[0].id


def count(c, model: str, tokens: int = 48) -> str:
    """A streamed greedy completion that runs its whole length."""
    stream = c.completions.create(
        model=model, prompt=COUNT, max_tokens=tokens, temperature=0, stream=True
    )
    return "".join(part.choices[0].text for part in stream)


def while_streaming(server, model: str, hostile) -> tuple[str, str]:
    """Run ``hostile()`` while another client streams; (the stream's text, its text alone)."""
    with client(server) as c:
        alone = count(c, model)
        with ThreadPoolExecutor(1) as pool:
            other = pool.submit(count, c, model)
            deadline = time.monotonic() + 60
            while not busy(server) and time.monotonic() < deadline:
                time.sleep(0.01)
            hostile()
            return other.result(timeout=300), alone


def busy(server) -> bool:
    return httpx.get(server.base + "/health").json()["active"] > 0


# -- item 1: one client never ends another's reply -----------------------------------------


def test_a_token_the_model_lacks_is_a_400_and_the_other_stream_goes_on(server, model):
    """Failed before the fix: "llama.cpp failed while generating (code -1)", for this
    request and for the concurrent stream, and every slot's cache was cleared."""
    answers = []

    def hostile():
        oc = ollama.Client(host=server.base)
        for context in ([99_999_999], [-5], [2**40], [5, 49_152]):
            with pytest.raises(ollama.ResponseError) as e:
                oc.generate(model=model, prompt="hi", context=context)
            answers.append((e.value.status_code, e.value.error))

    text, alone = while_streaming(server, model, hostile)
    assert text == alone  # whole, and the same as alone
    assert [a[0] for a in answers] == [400] * 4
    assert all("not a token of this model" in a[1] for a in answers)


# -- item 3: no client stalls the others ----------------------------------------------------


def test_a_30_mb_prompt_is_refused_by_its_size_and_the_other_stream_goes_on(server, model):
    """Failed before the fix: the prompt was tokenized on the llama thread (another
    stream froze for 25 s) before its 413."""
    huge = "x" * 30_000_000
    answers = []

    def hostile():
        with pytest.raises(openai.APIStatusError) as e, client(server) as c:
            c.chat.completions.create(model=model, messages=[{"role": "user", "content": huge}])
        answers.append((e.value.status_code, e.value.message))
        with pytest.raises(ollama.ResponseError) as e:
            ollama.Client(host=server.base).generate(model=model, prompt=huge)
        answers.append((e.value.status_code, e.value.error))

    text, alone = while_streaming(server, model, hostile)
    assert text == alone
    assert answers[0][0] == 413 and "30,000,000 characters" in answers[0][1]
    assert answers[1][0] == 400 and "30,000,000 characters" in answers[1][1]  # Ollama's 400


def test_a_chat_of_1200_turns_is_fitted_and_answered(server, model):
    """End to end: before the fix each dropped turn re-rendered the whole chat on the
    llama thread (83 s of every other stream frozen); the tests that failed then are
    tests/test_prompt_fit.py (it counts the renders) and tests/test_serve_worker.py
    (another reply moves while a prompt is built)."""
    turns = []
    for i in range(600):
        turns += [
            {"role": "user", "content": f"Note {i}: the river runs past the old mill."},
            {"role": "assistant", "content": f"Noted {i}."},
        ]
    turns.append({"role": "user", "content": "What was the last note number?"})
    reply = ollama.Client(host=server.base).chat(
        model=model, messages=turns, options={"temperature": 0, "num_predict": 8}
    )
    assert reply.done and 0 < reply.prompt_eval_count <= 1024 - 8


# -- item 4: limits that hold, and a disconnect is a quiet event -----------------------------


def test_clients_that_leave_mid_request_leave_no_tracebacks(server, model):
    """Failed before the fix: each one logged a ClientDisconnect traceback."""
    host, port = server.base.removeprefix("http://").split(":")
    held = []
    for _ in range(30):
        s = socket.create_connection((host, int(port)))
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b'\r\nContent-Length: 1000\r\n\r\n{"model": "'
        )
        held.append(s)
    time.sleep(0.5)
    for s in held:
        s.close()
    with client(server) as c:  # the server goes on
        assert c.completions.create(model=model, prompt=COUNT, max_tokens=2).choices
    time.sleep(0.5)
    assert "Traceback" not in server.log and "ClientDisconnect" not in server.log


# -- item 5: nothing about one user reaches another --------------------------------------------

SECRET = "You are Ada's assistant. Her door code is 4417 and her bank is Nordea."
WRONG = "You are Ada's assistant. Her door code is 9051 and her bank is Lloyds."


def ask(c, model: str, system: str, whole: bool = False, **extra) -> int:
    """Ask with ``system`` as the system prompt; the prompt tokens the cache held (with
    ``whole``, the prompt's tokens)."""
    r = c.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": "Hi."}],
        max_tokens=2,
        temperature=0,
        **extra,
    )
    return r.usage.prompt_tokens if whole else r.usage.prompt_tokens_details.cached_tokens


def test_another_client_cannot_learn_a_prompt_from_the_cache(server, model):
    """Failed before the fix: a second client's right guess of the secret system prompt
    came back with 21 cached tokens, a wrong one with 8. (Each guess comes from a
    machine of its own here: a client's own earlier guesses are its own cache.)"""
    with client(server) as alice:
        ask(alice, model, SECRET)
        assert ask(alice, model, SECRET) > 0  # her own prompts still come from the cache
    with client(server, "127.0.0.2") as right, client(server, "127.0.0.3") as wrong:
        assert ask(right, model, SECRET) == ask(wrong, model, WRONG) == 0
    # ... and on Ollama's API: the whole prompt evaluated, as for a wrong guess
    for system, source in ((SECRET, "127.0.0.4"), (WRONG, "127.0.0.5")):
        elsewhere = httpx.HTTPTransport(local_address=source)
        om = ollama.Client(host=server.base, transport=elsewhere)
        turns = [{"role": "system", "content": system}, {"role": "user", "content": "Hi."}]
        guess = om.chat(model=model, messages=turns, options={"num_predict": 1})
        with client(server) as alice:
            assert guess.prompt_eval_count == ask(alice, model, system, whole=True) > 20
    # On one machine, a cache key keeps two people apart too (vLLM's cache_salt).
    with client(server) as alice:
        ask(alice, model, SECRET, extra_body={"cache_salt": "alice-7c1e"})
        assert ask(alice, model, SECRET, extra_body={"cache_salt": "bob-22f0"}) == 0
        assert ask(alice, model, SECRET, extra_body={"cache_salt": "alice-7c1e"}) > 0
        assert ask(alice, model, SECRET, user="bob") == 0  # OpenAI's user field alike


# -- item 6: client mistakes are 400s in the API's shape ---------------------------------------


def test_a_prompt_too_long_is_400_on_ollamas_api_and_413_on_openais(server, model):
    """README and code agree (as Ollama does: 400); failed before the fix (413)."""
    long = "word " * 3000
    with pytest.raises(ollama.ResponseError) as e:
        ollama.Client(host=server.base).generate(model=model, prompt=long)
    assert e.value.status_code == 400 and "context" in e.value.error
    with client(server) as c, pytest.raises(openai.APIStatusError) as e:
        c.completions.create(model=model, prompt=long)
    assert e.value.status_code == 413 and e.value.code == "context_length_exceeded"


def test_the_server_takes_its_next_requests_as_before(server, model):
    """After all the above, greedy replies are what they were, from two machines."""

    def both(source):
        with client(server, source) as c:
            return count(c, model, 24)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(both, ["127.0.0.1", "127.0.0.3"]))
    assert results[0] == results[1] and results[0].strip()
