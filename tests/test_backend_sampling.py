"""llama.cpp's backend sampling (the chain inside the graph) on the real SmolLM2.

On a GPU it saves the logits' round trip; a CPU build runs it too (in the CPU graph),
so the path is tested here, forced on: greedy tokens must equal CPU greedy.
"""

from __future__ import annotations

from edgechat.llama.sampling import ENV, use_backend
from edgechat.planning.plan import Sampling

ASK = [{"role": "user", "content": "Name three colours."}]
GREEDY = Sampling(temperature=0.0, max_tokens=24)


def reply(engine, sampling, backend):
    engine.backend_sampling = backend
    try:
        r = engine.chat(ASK, sampling)
        text = r.collect()
        return text, engine.last_backend_sampling, r.stats
    finally:
        engine.backend_sampling = None


def test_backend_greedy_equals_cpu_greedy(engine):
    cpu, on_backend, _ = reply(engine, GREEDY, False)
    assert on_backend is False
    gpu_side, on_backend, stats = reply(engine, GREEDY, True)
    assert on_backend is True  # llama_set_sampler accepted the chain
    assert gpu_side == cpu and stats.gen_tokens > 5
    # and the engine is left as it was: plain CPU sampling and logits work after it
    assert reply(engine, GREEDY, False)[0] == cpu
    assert engine.logits(engine.tokenize("hello world")).shape[0] == 2


def test_full_chain_runs_on_the_backend_and_penalties_fall_back(engine):
    full = Sampling(temperature=0.7, seed=3, max_tokens=12)
    text, on_backend, _ = reply(engine, full, True)
    assert on_backend is True and text.strip()
    penalised = Sampling(temperature=0.7, seed=3, max_tokens=12, repeat_penalty=1.1)
    text, on_backend, _ = reply(engine, penalised, True)
    assert on_backend is False and text.strip()  # the CPU chain, which keeps the history


def test_when_backend_sampling_is_chosen(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    s = Sampling()
    assert use_backend(None, True, s) is True  # every layer on the GPU
    assert use_backend(None, False, s) is False  # CPU or partial offload: CPU sampling
    assert use_backend(False, True, s) is False
    assert use_backend(True, False, s) is True
    assert use_backend(True, True, Sampling(repeat_penalty=1.2)) is False
    monkeypatch.setenv(ENV, "1")
    assert use_backend(None, False, s) is True
    monkeypatch.setenv(ENV, "0")
    assert use_backend(None, True, s) is False
    assert use_backend(True, True, s) is True  # the engine's own option wins


def test_cpu_plan_samples_on_the_cpu_by_default(engine, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert engine.all_on_gpu is False
    engine.chat(ASK, GREEDY).collect()
    assert engine.last_backend_sampling is False
