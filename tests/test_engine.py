"""The engine on the real starter model (and Gemma 3 for sliding-window attention)."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from support import GREEDY

from edgechat.errors import ContextOverflow, ModelLoadError
from edgechat.llama.engine import Engine
from edgechat.planning.plan import RunPlan, Sampling

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def ask(text: str) -> list[dict]:
    return [SYSTEM, {"role": "user", "content": text}]


def test_chat_streams_a_reply_with_stats(engine):
    reply = engine.chat(ask("Name three colours."), Sampling(max_tokens=40, seed=1))
    pieces = list(reply)
    assert len(pieces) > 1, "a reply is streamed piece by piece"
    assert reply.text.strip()
    assert "".join(pieces) == reply.text
    s = reply.stats
    assert s.gen_tokens > 1 and s.gen_tps > 0 and s.prompt_tps > 0
    assert s.ttft_s > 0 and s.load_s > 0
    assert s.n_ctx == 2048 and s.prompt_tokens < s.n_ctx_used <= s.n_ctx
    assert s.finish in ("stop", "length")


def test_uses_the_models_chat_template(engine):
    prompt = engine.format_chat(ask("hi"))
    # SmolLM2 ships a ChatML template in its GGUF.
    assert "<|im_start|>system\nYou are a helpful assistant.<|im_end|>" in prompt
    assert prompt.rstrip().endswith("<|im_start|>assistant")
    assert engine.info()["chat_template"] is True


def test_greedy_is_repeatable_and_the_kv_cache_reuse_is_exact(engine):
    first = engine.chat(ask("What is the capital of France?"), GREEDY)
    a = first.collect()
    second = engine.chat(ask("What is the capital of France?"), GREEDY)
    b = second.collect()
    assert a == b and a.strip()
    # The second prompt was served from the cache but for its last token.
    assert second.stats.prompt_eval_tokens == 1
    assert second.stats.prompt_tokens == first.stats.prompt_tokens


def test_follow_up_evaluates_only_new_tokens(engine):
    msgs = ask("Give me a word for happy.")
    r1 = engine.chat(msgs, GREEDY)
    r1.collect()
    msgs += [{"role": "assistant", "content": r1.text}, {"role": "user", "content": "Another one?"}]
    r2 = engine.chat(msgs, GREEDY)
    r2.collect()
    assert r2.stats.prompt_eval_tokens < r2.stats.prompt_tokens / 2


def test_cancel_from_another_thread(engine):
    reply = engine.chat(
        ask("Write a long story about a dragon."),
        Sampling(max_tokens=1000, seed=3, grammar="start: /[a-z ]{20000,}/"),  # no early end
    )
    got = []
    for piece in reply:
        got.append(piece)
        if len(got) == 3:
            threading.Thread(target=engine.cancel).start()
    assert reply.stats.finish == "cancelled"
    assert reply.stats.gen_tokens < 50
    # The engine stays usable after a cancel.
    assert engine.chat(ask("Say yes."), GREEDY).collect().strip()


def test_closing_the_stream_counts_as_cancelled(engine):
    reply = engine.chat(ask("Count to one hundred."), Sampling(max_tokens=500))
    it = iter(reply)
    next(it)
    it.close()
    assert engine.last_stats.finish == "cancelled"


def test_max_tokens_ends_with_length(engine):
    reply = engine.chat(ask("Write a poem about the sea."), Sampling(max_tokens=5, seed=2))
    reply.collect()
    assert reply.stats.gen_tokens == 5 and reply.stats.finish == "length"


def test_overflow_drops_oldest_turns_but_never_the_system_prompt(small_engine):
    long = "The river runs through the old town and past the mill. " * 12
    msgs = [SYSTEM]
    for i in range(6):
        msgs += [
            {"role": "user", "content": f"Note {i}: {long}"},
            {"role": "assistant", "content": f"Noted {i}."},
        ]
    msgs.append({"role": "user", "content": "What was the last note number?"})
    assert len(small_engine.prompt_tokens(msgs)) > 512
    reply = small_engine.chat(msgs, Sampling(max_tokens=16, seed=1))
    reply.collect()
    assert reply.dropped >= 2 and reply.dropped % 2 == 0  # whole exchanges go
    kept, dropped, tokens = small_engine.fit(msgs, 16)
    assert kept[0] == SYSTEM and kept[-1] == msgs[-1]
    assert kept[1]["content"].startswith("Note ")  # an exchange starts the kept history
    assert len(tokens) + 16 <= 512
    assert reply.stats.n_ctx_used <= 512


def test_a_single_message_too_long_is_a_clear_error(small_engine):
    with pytest.raises(ContextOverflow, match="--ctx"):
        small_engine.chat(ask("word " * 2000))


def test_tokenize_round_trip(engine):
    text = "Héllo, wörld! 日本語"
    assert engine.detokenize(engine.tokenize(text, add_special=False)) == text


def test_context_larger_than_trained_is_capped(starter_path):
    with Engine(RunPlan(starter_path, n_ctx=100_000)) as eng:
        assert eng.n_ctx == eng.n_ctx_train == 8192
        assert eng.plan.n_ctx == 8192


def test_plan_defaults_resolve_for_this_machine(starter_path):
    plan = RunPlan(starter_path, n_ctx=256).resolved()
    assert plan.n_threads >= 1 and plan.n_threads_batch == plan.n_threads
    assert plan.n_batch == 256 and plan.n_ubatch == 256


def test_gemma_sliding_window_model_chats_and_reuses_its_cache(gemma_path):
    with Engine(RunPlan(gemma_path, n_ctx=1024)) as eng:
        info = eng.info()
        assert info["architecture"] == "gemma3" and info["n_vocab"] > 200_000
        msgs = [{"role": "user", "content": "The capital of France is"}]
        first = eng.chat(msgs, GREEDY)
        a = first.collect()
        second = eng.chat(msgs, GREEDY)
        assert second.collect() == a and a.strip()
        assert second.stats.prompt_eval_tokens == 1


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "not a GGUF"),
        (b"PK\x03\x04 this is a zip file", "not a GGUF"),
    ],
)
def test_non_gguf_files_are_refused(tmp_path, content, match):
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=match):
        Engine(RunPlan(path))


def test_truncated_gguf_is_refused_with_the_reason(tmp_path, starter_path):
    path = tmp_path / "cut.gguf"
    with starter_path.open("rb") as src:
        path.write_bytes(src.read(2_000_000))
    with pytest.raises(ModelLoadError, match="truncated"):
        Engine(RunPlan(path))


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        Engine(RunPlan(tmp_path / "nope.gguf"))


def test_stats_are_json_ready(engine):
    import json

    reply = engine.chat(ask("Hi"), replace(GREEDY, max_tokens=4))
    reply.collect()
    data = json.loads(json.dumps(reply.stats.as_dict()))
    assert data["gen_tokens"] == reply.stats.gen_tokens and "gen_tps" in data


def test_repeat_penalty_is_applied(engine):
    """llama.cpp's penalties sampler, as summaries use it: a reply, and a different one."""
    ask = [{"role": "user", "content": "List the days of the week, again and again."}]
    plain = engine.chat(ask, Sampling(temperature=0, max_tokens=48)).collect()
    penalised = engine.chat(ask, Sampling(temperature=0, max_tokens=48, repeat_penalty=1.5))
    text = penalised.collect()
    assert text.strip() and text != plain
