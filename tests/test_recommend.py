"""Recommendations on simulated devices: each gets a sensible top pick that fits."""

from __future__ import annotations

import json
import re

import pytest
from support.cli import run_main

from edgechat.facts.device import GPU, Device, GiB
from edgechat.planning import catalog
from edgechat.planning.fit import COMFORTABLE, NO_FIT, TIGHT, gpu_backend, judge
from edgechat.planning.memory import QUANT_BITS
from edgechat.planning.recommend import choose, recommend
from edgechat.planning.speed import cpu_bandwidth

PI = "Raspberry Pi 4 Model B Rev 1.4"


def device(ram_gib, simd=("AVX2", "FMA"), cores=4, board=None, gpu=None, arch="x86_64"):
    backends = ("cpu",) if gpu is None else ("metal" if gpu.unified else "cuda", "cpu")
    return Device(
        ram_total=int(ram_gib * GiB),
        ram_available=int(ram_gib * GiB * 0.9),  # a desktop session already running
        swap_total=0,
        swap_free=0,
        cpu_model="simulated",
        cores_physical=cores,
        cores_logical=cores,
        simd=simd,
        arch=arch,
        os="Linux",
        board=board,
        models_dir="/models",
        disk_free=500 * GiB,
        gpus=() if gpu is None else (gpu,),
        llama_backends=backends,
        gpu_offload=gpu is not None,
    )


def nvidia(vram_gib, name):
    return GPU("nvidia", name, vram_gib * GiB, int(vram_gib * GiB * 0.95))


DEVICES = {
    "pi4-2g": device(2, ("NEON",), 4, PI, arch="aarch64"),
    "pi4-4g": device(4, ("NEON",), 4, PI, arch="aarch64"),
    "pi4-8g": device(8, ("NEON",), 4, PI, arch="aarch64"),
    "laptop-8g": device(8),
    "laptop-16g": device(16),
    "nvidia-6g": device(16, gpu=nvidia(6, "NVIDIA GeForce RTX 3060 Laptop GPU")),
    "nvidia-8g": device(32, gpu=nvidia(8, "NVIDIA GeForce RTX 4060")),
    "nvidia-24g": device(64, cores=8, gpu=nvidia(24, "NVIDIA GeForce RTX 4090")),
    "m2-16g": device(
        16, ("NEON", "DOTPROD", "I8MM"), 8, gpu=GPU("apple", "Apple M2", 16 * GiB, None, True)
    ),
}
# The largest model (billions of parameters) a sensible top pick has on each machine.
MAX_PARAMS = {"pi4-2g": 1.8, "pi4-4g": 3.5, "pi4-8g": 8.5, "laptop-8g": 8.5}
PRECISE = ("Q8_0", "Q6_K", "Q5_K_M")


@pytest.fixture(scope="module")
def cat():
    return catalog.load()


def ranked(cat, name, task):
    d = DEVICES[name]
    return recommend(cat, d, task, 4096, cpu_bandwidth(d, measure=False))


@pytest.mark.parametrize("name", list(DEVICES))
@pytest.mark.parametrize("task", ["chat", "code", "math", "summarise"])
def test_top_pick_fits_and_suits_the_task(cat, name, task):
    choices = ranked(cat, name, task)
    top = choices[0]
    assert top.fit.label == COMFORTABLE, top.reason
    assert task in top.model.tasks or (task == "chat" and "summarise" in top.model.tasks)
    # A top pick replies at least as fast as people read; a Pi 4 does what it can.
    assert top.speed.tokens_per_s >= (1.5 if name.startswith("pi4") else 3)
    assert top.model.params_b <= MAX_PARAMS.get(name, 100)
    if task in ("chat", "summarise"):
        assert top.quant == "Q4_K_M"
    else:
        # Where even 4-bit is slower than reading (a Pi 4), the quickest 4-bit quant.
        assert top.quant in PRECISE or top.quant in ("Q4_K_M", "Q4_0") and name.startswith("pi4")
    # Never rank a choice that does not fit above one that does.
    order = {COMFORTABLE: 0, TIGHT: 1, NO_FIT: 2}
    labels = [order[c.fit.label] for c in choices]
    assert labels == sorted(labels)
    # What the estimate says fits is within the budget the judge used.
    assert top.estimate.ram_needed <= top.fit.ram_budget


def test_gpu_machines_offload_and_unified_memory_uses_metal(cat):
    for name in ("nvidia-6g", "nvidia-8g", "nvidia-24g"):
        top = ranked(cat, name, "chat")[0]
        assert top.estimate.n_gpu_layers > 0 and top.estimate.backend == "cuda"
        assert top.estimate.vram <= DEVICES[name].gpus[0].vram_free
    top = ranked(cat, "m2-16g", "chat")[0]
    assert top.estimate.backend == "metal" and top.model.params_b >= 7


def test_a_24gb_gpu_takes_70b_only_at_very_low_bits_or_with_offload(cat):
    d = DEVICES["nvidia-24g"]
    llama70 = cat["llama-3.3-70b-instruct"]
    pick = choose(llama70, "chat", 4096, d, 25.0)
    full_offload = pick.estimate.n_gpu_layers > llama70.arch["layers"]
    assert pick.fit.fits
    assert QUANT_BITS[pick.quant] < 3 or not full_offload
    q4 = choose(llama70, "chat", 4096, d, 25.0, quant="Q4_K_M")
    assert q4.estimate.n_gpu_layers <= llama70.arch["layers"]  # 40 GB of weights: partial


def test_four_gb_budget_means_two_to_three_billion_at_4_bit(cat):
    d = DEVICES["laptop-8g"]
    # 4 GiB of RAM free for the model: the biggest 4-bit model that fits is ~3B.
    budget = device(5)
    fits = [
        m.params_b
        for m in cat.values()
        if "Q4_K_M" in m.quants and choose(m, "chat", 4096, budget, 25.0, "Q4_K_M").fit.fits
    ]
    assert 2.0 <= max(fits) <= 4.5
    assert choose(cat["llama-3.1-8b-instruct"], "chat", 4096, d, 25.0, "Q4_K_M").fit.fits


def test_code_prefers_eight_bit_when_it_fits(cat):
    coder = cat["qwen2.5-coder-7b-instruct"]
    big = choose(coder, "code", 4096, DEVICES["nvidia-24g"], 25.0)
    assert big.quant == "Q8_0" and "accuracy" in big.reason
    chat = choose(coder, "chat", 4096, DEVICES["nvidia-24g"], 25.0)
    assert chat.quant == "Q4_K_M"


def test_nothing_fits_is_said_plainly(cat):
    tiny = device(0.25)
    choices = recommend(cat, tiny, "chat", 4096, 25.0)
    assert all(c.fit.label == NO_FIT for c in choices)
    assert choices[0].reason.startswith("does not fit: needs")


def test_judge_labels_and_backend():
    d = DEVICES["laptop-16g"]
    assert gpu_backend(d) is None and gpu_backend(DEVICES["m2-16g"]) == "metal"
    no_build = DEVICES["nvidia-8g"].__class__(
        **{**DEVICES["nvidia-8g"].__dict__, "gpu_offload": False}
    )
    assert gpu_backend(no_build) is None  # a GPU this llama.cpp build cannot use
    from edgechat.planning.memory import MemoryEstimate
    from edgechat.planning.plan import RunPlan

    def est(ram):
        return MemoryEstimate(RunPlan("x"), 4096, 0, ram, ram, 0)

    assert judge(est(4 * GiB), d).label == COMFORTABLE
    assert judge(est(13.5 * GiB), d).label == TIGHT
    assert judge(est(15 * GiB), d).label == NO_FIT


def test_recommend_command_json_and_text():
    result = run_main("recommend", "--memory", "4G", "--task", "code", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["task"] == "code" and out["device"]["assumed"] == ["memory=4.0 GiB"]
    top = out["choices"][0]
    for key in (
        "id",
        "quant",
        "n_ctx",
        "gpu_layers",
        "ram_bytes",
        "vram_bytes",
        "fit",
        "tokens_per_s",
        "reason",
        "download_bytes",
        "params",
        "params_b",
    ):
        assert key in top
    assert out["fit_means"].startswith("memory only")
    assert top["fit"] == "comfortable" and top["ram_bytes"] < 4 * GiB
    text = run_main("recommend", "--memory", "16G", "-n", "3")
    rows = [line for line in text.stdout.splitlines() if re.match(r" ?\d+ ", line)]
    assert text.returncode == 0 and len(rows) == 3
    assert "comfortable" in text.stdout and "memory fit" in text.stdout


def test_without_a_token_a_gated_model_is_never_first(cat):
    # A 4 GB machine: the gated Gemma 3 4B QAT would rank high on size and quality.
    d = device(6)
    signed_in = recommend(cat, d, "chat", 4096, 25.0, signed_in=True)
    anonymous = recommend(cat, d, "chat", 4096, 25.0, signed_in=False)
    assert not anonymous[0].model.gated
    fits = [c for c in anonymous if c.fit.label == COMFORTABLE]
    seen_gated = False
    for c in fits:  # among equally fitting choices, every open one before every gated one
        seen_gated |= c.model.gated
        assert c.model.gated or not seen_gated
    assert {c.model.id for c in signed_in} == {c.model.id for c in anonymous}
    qat = choose(cat["gemma-3-4b-it-qat"], "chat", 4096, d, 25.0)
    assert "quantisation-aware training" in qat.reason and "edgechat login" in qat.reason


@pytest.mark.parametrize("name", ["pi4-4g", "laptop-16g", "nvidia-24g"])
def test_every_row_has_a_reason_beyond_the_quant_name(cat, name):
    for task in ("chat", "code"):
        for c in ranked(cat, name, task):
            assert c.reason.strip() and c.reason.strip() != c.quant, c.model.id
            assert len(c.reason) > len(c.quant) + 5


def test_a_bandwidth_taken_under_load_is_measured_again(edgechat_home, monkeypatch):
    import os

    from edgechat.paths import paths
    from edgechat.planning import speed

    d = device(16)
    d = d.__class__(**{**d.__dict__, "cpu_model": "this machine"})
    cache = paths().cache_dir / "bandwidth.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    key = f"{d.cpu_model}|{d.cores_logical}|{d.ram_total}"
    monkeypatch.setattr(os, "getloadavg", lambda: (0.4, 0.4, 0.4))  # a quiet machine now
    cache.write_text(json.dumps({"key": key, "gb_s": 30.0, "load": 0.1}))
    assert cpu_bandwidth(d) == 30.0  # a quiet measurement is kept
    cache.write_text(json.dumps({"key": key, "gb_s": 0.5, "load": 3.0}))  # busy, and too low
    measured = cpu_bandwidth(d)
    assert measured > 0.5
    assert json.loads(cache.read_text())["gb_s"] == pytest.approx(measured, abs=0.01)
    assert speed._looks_wrong(18.0, 1.5, 0.2) and not speed._looks_wrong(18.0, 0.2, 0.2)


# -- issue 31 item 12: the best choice here, quality and speed both -----------------------

READING = 5.0  # tokens/s: about four words a second, as people read
TWO_CORES = device(24, ("AVX512_VNNI", "AVX512", "AVX2", "FMA"), cores=2)  # this machine


@pytest.mark.parametrize("name", [*DEVICES, "two-cores"])
@pytest.mark.parametrize("task", ["chat", "code"])
def test_slower_than_reading_never_ranks_above_a_quicker_choice(cat, name, task):
    """A reply slower than people read (5 tokens/s) is not a good pick where a quicker
    one fits: among the choices that fit alike, every quick one comes first."""
    d = TWO_CORES if name == "two-cores" else DEVICES[name]
    choices = recommend(cat, d, task, 4096, cpu_bandwidth(d, measure=False))
    for label in (COMFORTABLE, TIGHT):
        alike = [c.speed.tokens_per_s < READING for c in choices if c.fit.label == label]
        assert alike == sorted(alike), [(c.id, c.speed.tokens_per_s) for c in choices]


def test_two_cores_do_not_get_7b_models_at_3_tokens_a_second(cat):
    choices = recommend(cat, TWO_CORES, "chat", 4096, 25.0)
    for c in choices[:5]:
        assert c.model.params_b < 7 and c.speed.tokens_per_s >= READING, (c.id, c.speed)
    assert choices[0].model.params_b >= 1.5  # a model worth chatting with, not the 135M


def test_an_installed_model_is_marked_not_ranked_up(cat):
    """`recommend --task chat --memory 4G` put the installed 135M starter first, ahead of
    3B models that fit; it is marked and takes the place its merits give it."""
    from edgechat.models.registry import STARTER_ID, starter_model_path

    d = device(4.5)  # 4 GiB free
    plain = recommend(cat, d, "chat", 4096, 25.0)
    mine = recommend(cat, d, "chat", 4096, 25.0, installed={STARTER_ID: starter_model_path()})
    ids = [c.id for c in mine]
    assert mine[0].id == plain[0].id and mine[0].model.params_b >= 1.5
    assert ids.index(STARTER_ID) > 5 and next(c for c in mine if c.id == STARTER_ID).installed
    assert [c.id for c in mine if c.id != STARTER_ID] == [c.id for c in plain]
