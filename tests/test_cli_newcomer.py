"""The line chat and the commands around it (issue 15): exit codes a script can trust,
base models refused with the reason, `history search`, sampling settings with ranges,
the KV cache type, and the starter's "last used"."""

from __future__ import annotations

import json
import signal
import time

import pytest
from support.cli import run_cli, run_main
from support.terminal import Terminal

from edgechat import config
from edgechat.planning.plan import Sampling
from edgechat.tasks.conversations import Store


@pytest.mark.model
@pytest.mark.subprocess
def test_one_shot_chat_exits_130_after_ctrl_c():
    term = Terminal("chat", "--max-tokens", "3000", "--seed", "7", "Write a very long story.")
    try:
        pos = term.read_until("tokens\r\n")  # loaded
        term.read_more(pos, 30)  # the reply is streaming
        term.proc.send_signal(signal.SIGINT)
        assert term.proc.wait(timeout=60) == 130
        assert "[stopped]" in term.screen or term.read_until("[stopped]", timeout=5)
    finally:
        term.close()


@pytest.mark.model
@pytest.mark.subprocess
def test_piped_plain_chat_exits_1_after_a_context_overflow():
    too_long = "word " * 800
    result = run_cli(
        "chat", "--plain", "--ctx", "512", "--max-tokens", "4", input=f"{too_long}\nHi\n"
    )
    assert result.returncode == 1, result.stderr
    assert "does not fit the 512-token context" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_base_model_is_refused_with_the_reason(gemma_path):
    result = run_main("chat", "--model", str(gemma_path), "Hello")
    assert result.returncode == 1
    assert "is a base model" in result.stderr and "instruct" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.model
def test_models_list_fills_last_used_for_the_starter():
    before = json.loads(run_main("models", "list", "--json").stdout)
    assert before[0]["id"] == "smollm2-135m-instruct:Q4_1" and before[0]["last_used"] is None
    t0 = time.time()
    assert run_main("chat", "--max-tokens", "2", "Hi").returncode == 0
    after = json.loads(run_main("models", "list", "--json").stdout)
    assert after[0]["last_used"] >= t0 - 1


def test_history_search_finds_words_in_every_conversation():
    store = Store()
    trip = store.create("Trip")
    store.add_message(trip.id, "user", "Where should I go in May?")
    store.add_message(trip.id, "assistant", "Lisbon is lovely in May; Porto too.")
    other = store.create("Bread")
    store.add_message(other.id, "user", "How do I bake bread?")
    store.update_message(store.add_message(other.id, "assistant", ""), "Knead, rest, bake.")
    store.close()
    hits = json.loads(run_main("history", "search", "lisb", "--json").stdout)
    assert [(h["conversation"], h["role"]) for h in hits] == [(trip.id, "assistant")]
    assert "[Lisbon]" in hits[0]["snippet"]
    streamed = json.loads(run_main("history", "search", "knead", "--json").stdout)
    assert streamed and streamed[0]["conversation"] == other.id  # rewritten text is indexed
    text = run_main("history", "search", "nowhere")
    assert text.returncode == 0 and "no message holds" in text.stdout
    empty = run_main("history", "search", "!!")
    assert empty.returncode == 1 and "give some words" in empty.stderr
    listed = json.loads(run_main("history", "list", "--json").stdout)
    assert {r["title"] for r in listed} == {"Trip", "Bread"}


def test_sampling_settings_have_ranges_and_reach_the_sampler(edgechat_home, engine):
    shown = json.loads(run_main("config", "--json").stdout)["settings"]
    assert shown["repeat_penalty"] == 1.1 and shown["seed"] == -1 and shown["kv_cache"] == "f16"
    bad = run_main("config", "set", "repeat_penalty", "5")
    assert bad.returncode == 1 and "must be 1.0 to 2.0" in bad.stderr
    bad = run_main("config", "set", "kv_cache", "q2")
    assert bad.returncode == 1 and "f16, q8_0, q4_0" in bad.stderr
    assert run_main("config", "set", "seed", "42").returncode == 0
    assert run_main("config", "set", "temperature", "0.9").returncode == 0
    sampling = Sampling(**{**config.load().sampling_values(), "max_tokens": 12})
    assert (sampling.seed, sampling.repeat_penalty, sampling.temperature) == (42, 1.1, 0.9)
    chat = [{"role": "user", "content": "Tell me a word."}]
    first = engine.chat(chat, sampling).collect()
    assert engine.chat(chat, sampling).collect() == first  # the seed holds


@pytest.mark.model
def test_kv_cache_type_from_the_option_or_the_setting_reaches_llama_cpp():
    args = ("chat", "--verbose", "--max-tokens", "2", "Hi")
    result = run_main(*args[:1], "--kv-cache", "q8_0", *args[1:])
    assert result.returncode == 0, result.stderr
    assert "K (q8_0)" in result.stderr and "V (q8_0)" in result.stderr  # llama.cpp's own log
    assert run_main("config", "set", "kv_cache", "q4_0").returncode == 0
    assert "K (q4_0)" in run_main(*args).stderr
    bad = run_main("chat", "--kv-cache", "q3", "Hi")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


@pytest.mark.model
def test_a_capped_context_is_said():
    result = run_main("chat", "--ctx", "16384", "--max-tokens", "2", "Hi")
    assert result.returncode == 0, result.stderr
    assert "context capped at 8192 tokens (asked 16384)" in result.stderr
