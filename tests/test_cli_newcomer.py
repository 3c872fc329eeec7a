"""The line chat and the commands around it (issue 15): exit codes a script can trust,
base models refused with the reason, `history search`, sampling settings with ranges,
the KV cache type, and the starter's "last used"."""

from __future__ import annotations

import json
import signal
import time

from conftest import run_cli
from test_plain_terminal import Terminal

from edgechat import config
from edgechat.planning.plan import Sampling
from edgechat.tasks.conversations import Store


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


def test_piped_plain_chat_exits_1_after_a_context_overflow():
    too_long = "word " * 800
    result = run_cli(
        "chat", "--plain", "--ctx", "512", "--max-tokens", "4", input=f"{too_long}\nHi\n"
    )
    assert result.returncode == 1, result.stderr
    assert "does not fit the 512-token context" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_base_model_is_refused_with_the_reason(gemma_path):
    result = run_cli("chat", "--model", str(gemma_path), "Hello")
    assert result.returncode == 1
    assert "is a base model" in result.stderr and "instruct" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_models_list_fills_last_used_for_the_starter():
    before = json.loads(run_cli("models", "list", "--json").stdout)
    assert before[0]["id"] == "smollm2-135m-instruct:Q4_1" and before[0]["last_used"] is None
    t0 = time.time()
    assert run_cli("chat", "--max-tokens", "2", "Hi").returncode == 0
    after = json.loads(run_cli("models", "list", "--json").stdout)
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
    hits = json.loads(run_cli("history", "search", "lisb", "--json").stdout)
    assert [(h["conversation"], h["role"]) for h in hits] == [(trip.id, "assistant")]
    assert "[Lisbon]" in hits[0]["snippet"]
    streamed = json.loads(run_cli("history", "search", "knead", "--json").stdout)
    assert streamed and streamed[0]["conversation"] == other.id  # rewritten text is indexed
    text = run_cli("history", "search", "nowhere")
    assert text.returncode == 0 and "no message holds" in text.stdout
    empty = run_cli("history", "search", "!!")
    assert empty.returncode == 1 and "give some words" in empty.stderr
    listed = json.loads(run_cli("history", "list", "--json").stdout)
    assert {r["title"] for r in listed} == {"Trip", "Bread"}


def test_sampling_settings_have_ranges_and_reach_the_sampler(edgechat_home, engine):
    env = {"EDGECHAT_HOME": str(edgechat_home)}
    shown = json.loads(run_cli("config", "--json", env=env).stdout)["settings"]
    assert shown["repeat_penalty"] == 1.1 and shown["seed"] == -1 and shown["kv_cache"] == "f16"
    bad = run_cli("config", "set", "repeat_penalty", "5", env=env)
    assert bad.returncode == 1 and "must be 1.0 to 2.0" in bad.stderr
    bad = run_cli("config", "set", "kv_cache", "q2", env=env)
    assert bad.returncode == 1 and "f16, q8_0, q4_0" in bad.stderr
    assert run_cli("config", "set", "seed", "42", env=env).returncode == 0
    assert run_cli("config", "set", "temperature", "0.9", env=env).returncode == 0
    sampling = Sampling(**{**config.load().sampling_values(), "max_tokens": 12})
    assert (sampling.seed, sampling.repeat_penalty, sampling.temperature) == (42, 1.1, 0.9)
    chat = [{"role": "user", "content": "Tell me a word."}]
    first = engine.chat(chat, sampling).collect()
    assert engine.chat(chat, sampling).collect() == first  # the seed holds


def test_kv_cache_type_from_the_option_or_the_setting_reaches_llama_cpp(edgechat_home):
    env = {"EDGECHAT_HOME": str(edgechat_home)}
    args = ("chat", "--verbose", "--max-tokens", "2", "Hi")
    result = run_cli(*args[:1], "--kv-cache", "q8_0", *args[1:], env=env)
    assert result.returncode == 0, result.stderr
    assert "K (q8_0)" in result.stderr and "V (q8_0)" in result.stderr  # llama.cpp's own log
    assert run_cli("config", "set", "kv_cache", "q4_0", env=env).returncode == 0
    assert "K (q4_0)" in run_cli(*args, env=env).stderr
    bad = run_cli("chat", "--kv-cache", "q3", "Hi", env=env)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_a_capped_context_is_said(tmp_path):
    result = run_cli("chat", "--ctx", "16384", "--max-tokens", "2", "Hi")
    assert result.returncode == 0, result.stderr
    assert "context capped at 8192 tokens (asked 16384)" in result.stderr
