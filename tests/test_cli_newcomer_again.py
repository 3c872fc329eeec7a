"""What a newcomer found at the command line this time (issue 31 items 9 and 14): a base
model refused as the default where `chat` would refuse it, `history --json`, the same
default_model before and after `config unset`, one clear line for an unknown --model,
replies set apart on a pipe, and "1 CPU" where there is one."""

from __future__ import annotations

import json

from support.cli import run_main
from support.tiny_llama import write_tiny_llama

from edgechat.models.registry import STARTER_ID, starter_model_path

# -- 9. a base model as the default --------------------------------------------------------


def test_a_base_model_cannot_be_the_default(tmp_path, edgechat_home):
    """A model with no chat template whose names say nothing of tuning (as Gemma 3 270M
    base): every `chat` would refuse it, so `config set` does, saying what to pick."""
    base = write_tiny_llama(tmp_path / "tiny-base.gguf")
    result = run_main("config", "set", "default_model", str(base))
    assert result.returncode == 1
    err = result.stderr.strip()
    assert "\n" not in err and "is a base model" in err and "cannot be the default" in err
    assert f"{STARTER_ID} (installed)" in err and "edgechat recommend" in err
    assert not (edgechat_home / "config" / "config.toml").exists()  # nothing written
    assert run_main("config", "set", "default_model", str(starter_model_path())).returncode == 0
    assert run_main("config", "set", "default_model", STARTER_ID).returncode == 0


def test_config_and_chat_agree_on_the_issues_model(gemma_path):
    """`config set default_model gemma-3-270m:Q4_K_M` was accepted, then every chat failed."""
    refused = run_main("config", "set", "default_model", str(gemma_path))
    assert refused.returncode == 1 and "is a base model" in refused.stderr
    chat = run_main("chat", "--model", str(gemma_path), "Hello")
    assert chat.returncode == 1 and "is a base model" in chat.stderr
    assert json.loads(run_main("config", "--json").stdout)["settings"]["default_model"] == ""
