"""One contract for every engine (llama/contract.py), and the checks every front end
makes after a load (service.chat_check)."""

from __future__ import annotations

import pytest
from support.fake_engine import FakeEngine

from edgechat.llama.contract import ChatEngine, reply_reserve
from edgechat.service import chat_check


def test_the_reply_reserve_is_the_cap_within_a_quarter_of_the_context():
    assert reply_reserve(100, 4096) == 100
    assert reply_reserve(4096, 4096) == 1024
    assert reply_reserve(0, 2) == 1


@pytest.mark.model
def test_the_llama_engine_keeps_the_contract(engine):
    assert isinstance(engine, ChatEngine)
    assert engine.is_local and engine.where == "this machine"
    assert chat_check(engine, 2048) == chat_check(engine, 1024)  # nothing to say here
    assert chat_check(engine, 2048).refusal is None


@pytest.mark.model
def test_a_capped_context_is_one_warning(engine):
    check = chat_check(engine, engine.n_ctx * 2)
    assert check.refusal is None
    assert check.warnings == (
        f"context capped at {engine.n_ctx} tokens (asked {engine.n_ctx * 2}): "
        f"{engine.plan.model_path.name} was trained for {engine.n_ctx_train}",
    )


def test_the_fake_engine_keeps_it_too():
    fake = FakeEngine("one two three four five six")
    assert isinstance(fake, ChatEngine)
    reply = fake.chat([{"role": "user", "content": "hi"}])
    assert reply.collect() == "one two three four five six"
    assert reply.stats.finish == "stop" and reply.stats.gen_tokens > 1


def test_a_capped_fake_context_is_said_through_the_contract_alone():
    check = chat_check(FakeEngine(n_ctx=512), 4096)
    assert check.refusal is None
    assert "context capped at 512 tokens (asked 4096)" in check.warnings[0]


def test_a_server_model_is_the_servers_to_judge():
    remote = FakeEngine(is_local=False, where="desk:8080")
    assert chat_check(remote, 10**6).refusal is None and not chat_check(remote, 10**6).warnings
