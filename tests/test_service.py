"""The one way in to a model: every command builds the same ModelRequest, gets the same
plan and fit check, and loads what was estimated. On the real starter model."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import pytest
from support.cli import run_main
from support.devices import simulated_device

from edgechat.config import Settings
from edgechat.errors import EdgechatError
from edgechat.facts.device import GPU, GiB
from edgechat.service import ModelRequest, open_model, plan_model, sampling

LAPTOP = simulated_device()
NVIDIA = replace(
    LAPTOP,
    gpus=(GPU("nvidia", "NVIDIA H100", 80 * GiB, 79 * GiB),),
    llama_backends=("cuda", "cpu"),
    gpu_offload=True,
)


def test_options_and_settings_make_one_request():
    settings = Settings(ctx=8192, threads=3, gpu_layers=-1, default_model="mine", temperature=0.2)
    args = argparse.Namespace(model=None, ctx=None, threads=None, gpu_layers=7, force=True)
    request = ModelRequest.from_args(args, settings)
    assert request == ModelRequest(
        model=None, ctx=8192, threads=3, gpu_layers=7, force=True, default_model="mine"
    )
    assert ModelRequest.from_args(argparse.Namespace(), Settings()).gpu_layers == -1
    s = sampling(settings, argparse.Namespace(temperature=None, seed=5), temperature=0.3)
    assert (s.temperature, s.seed, s.top_k) == (0.3, 5, settings.top_k)
    assert (
        sampling(settings, argparse.Namespace(temperature=0.9), temperature=0.3).temperature == 0.9
    )


def test_the_plan_offloads_to_a_gpu_and_keeps_its_estimate(starter_path):
    request = ModelRequest(model=str(starter_path), ctx=1024)
    on_gpu = plan_model(request, NVIDIA)
    assert on_gpu.plan is on_gpu.estimate.plan  # what was estimated is what is loaded
    assert on_gpu.plan.n_gpu_layers > 0 and on_gpu.estimate.vram > 0
    assert plan_model(replace(request, gpu_layers=0), NVIDIA).plan.n_gpu_layers == 0
    assert plan_model(request, LAPTOP).plan.n_gpu_layers == 0
    assert on_gpu.label == "smollm2-135m-instruct:Q4_1"  # the installed id, not the file name


def test_what_does_not_fit_is_refused_unless_forced(starter_path):
    tiny = replace(LAPTOP, ram_total=100 * 2**20, ram_available=100 * 2**20)
    request = ModelRequest(model="starter", ctx=1024)
    with pytest.raises(EdgechatError, match="will not fit.*--force"):
        plan_model(request, tiny)
    said = []
    forced = plan_model(replace(request, force=True), tiny, say=said.append)
    assert said == list(forced.warnings) and "loading anyway (--force)" in said[0]


def test_open_model_loads_the_checked_plan(starter_path):
    loaded = open_model(ModelRequest(model="starter", ctx=512), device=LAPTOP)
    with loaded.engine as engine:
        assert engine.n_ctx == loaded.estimate.n_ctx == 512
        assert engine.plan.n_gpu_layers == loaded.estimate.n_gpu_layers
        assert loaded.fit.fits and loaded.warnings == () and loaded.label == "starter"


@pytest.mark.subprocess  # bench measures in a child process
def test_bench_takes_the_options_and_the_fit_check_of_chat(starter_path):
    refused = run_main("bench", "starter", "--memory", "100M", "--repeat", "1")
    assert refused.returncode == 1 and "will not fit" in refused.stderr
    chat = run_main("chat", "--plain", "--model", "starter", "--memory", "100M", "Hi")
    assert chat.returncode == 1 and "will not fit" in chat.stderr
    # An assumed GPU gets its layers, as a chat would: bench measures the plan chat loads.
    ran = run_main(
        "bench",
        "starter",
        "--vram",
        "6G",
        "--repeat",
        "1",
        "--ctx",
        "512",
        "--tokens",
        "8",
        "--json",
    )
    assert ran.returncode == 0, ran.stderr
    (row,) = json.loads(ran.stdout)
    assert row["n_gpu_layers"] > 0 and row["n_ctx"] == 512
