"""Bad flags, bad settings and damaged state files: one line each, never a traceback.

Flags are checked where they enter (argparse types), settings on ``config set`` and
again when the file is read; ``config unset`` still works on a file that no longer
parses. A user ``models.toml`` and ``models.json`` of the wrong shape say which file.
"""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from edgechat import config
from edgechat.cli import build_parser
from edgechat.errors import ConfigError, EdgechatError
from edgechat.models import registry
from edgechat.paths import paths
from edgechat.planning import catalog

BAD_FLAGS = [
    (["chat", "--ctx", "0"], "512 to"),
    (["chat", "--ctx", "-5"], "512 to"),
    (["chat", "--ctx", "64"], "512 to"),
    (["chat", "--ctx", "99999999999"], "512 to"),
    (["chat", "--ctx", "4k"], "whole number"),
    (["chat", "--threads", "-1"], "CPU threads"),
    (["chat", "--threads", "1000"], "CPU threads"),
    (["chat", "--max-tokens", "0"], "1 to"),
    (["chat", "--max-tokens", "-1"], "1 to"),
    (["chat", "--temperature", "nan"], "finite"),
    (["chat", "--temperature", "inf"], "finite"),
    (["chat", "--temperature", "-0.5"], "0.0 to 2.0"),
    (["chat", "--seed", "-3"], "seed"),
    (["chat", "--gpu-layers", "-7"], "-1 to"),
    (["estimate", "x", "--ctx", "0"], "512 to"),
    (["recommend", "--ctx", "1"], "512 to"),
    (["recommend", "-n", "0"], "1 to"),
    (["bench", "--repeat", "0"], "1 to"),
    (["bench", "--tokens", "-4"], "1 to"),
    (["summarise", "f.txt", "--ctx", "10"], "512 to"),
    (["models", "info", "x", "--ctx", "nan"], "whole number"),
]


@pytest.mark.parametrize("argv, words", BAD_FLAGS)
def test_bad_flags_are_usage_errors_with_the_range(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_a_bad_flag_exits_2_from_the_real_command():
    result = run_cli("chat", "--ctx", "0", "hello")
    assert result.returncode == 2 and "512 to 1048576, got 0" in result.stderr


BAD_SETTINGS = [
    ("temperature", "nan", "finite"),
    ("temperature", "-1", "0.0 to 2.0"),
    ("temperature", "1e999", "finite"),
    ("ctx", "999999999", "512 to 1048576"),
    ("ctx", "0", "512 to"),
    ("ctx", "2048.5", "whole number"),
    ("top_p", "7.0", "more than 0 and at most 1"),
    ("top_p", "0", "more than 0"),
    ("min_p", "-3.0", "0.0 to 1.0"),
    ("max_tokens", "0", "1 to"),
    ("threads", "-1", "CPU threads"),
    ("top_k", "-2", "0 to"),
    ("default_model", "does-not-exist", "neither an installed model nor a GGUF file"),
    ("default_model", "/no/such/file.gguf", "neither an installed model nor a GGUF file"),
    ("colour", "blue", "unknown setting"),
]


@pytest.mark.parametrize("key, value, words", BAD_SETTINGS)
def test_config_set_refuses_what_would_break_every_command(key, value, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")) as err:
        config.set_value(key, value)
    assert "\n" not in str(err.value)
    assert not paths().config_file.exists()  # nothing written
    assert config.load() == config.Settings()


def test_config_set_accepts_what_is_in_range():
    s = config.set_value("temperature", "0")
    s = config.set_value("top_p", "1")
    s = config.set_value("ctx", "512")
    s = config.set_value("default_model", "starter")
    assert (s.temperature, s.top_p, s.ctx, s.default_model) == (0.0, 1.0, 512, "starter")


DAMAGED_CONFIG = [
    (b"temperature = nan\n", "temperature"),
    (b"ctx = inf\n", "ctx"),
    (b"ctx = -inf\n", "ctx"),
    (b"top_p = 7.0\n", "top_p"),
    (b"ctx = 4096.5\n", "ctx"),
    (b"ctx = '4096x'\n", "ctx"),
    (b"ctx = []\n", "ctx"),
    (b"ctx = true\n", "ctx"),
    (b"threads = 99999\n", "threads"),
    (b"system_prompt = 3\n", "system_prompt"),
    (b"default_model = { a = 1 }\n", "default_model"),
    (b"ctx = " + b"[" * 50_000 + b"]" * 50_000 + b"\n", "ctx"),
    (b"system_prompt = '\xff\xfe bad'\n", "system_prompt"),
    (b"ctx = 4096\nctx = 2048\n", "ctx"),
    (b"ctx = 4096 oops\n", "ctx"),
]


@pytest.mark.parametrize("content, key", DAMAGED_CONFIG)
def test_damaged_config_is_one_line_and_unset_repairs_it(content, key):
    file = paths().config_file
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        config.load()
    message = str(err.value)
    assert "\n" not in message and str(file) in message
    shown = run_cli("config")
    assert shown.returncode == 1 and shown.stderr.count("\n") == 1
    assert "Traceback" not in shown.stderr
    assert run_cli("config", "unset", key).returncode == 0, run_cli("config").stderr
    assert config.load() == config.Settings()


def test_unset_leaves_the_other_settings():
    file = paths().config_file
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text("temperature = 0.2\nctx = nan\n")
    config.unset_value("ctx")
    assert config.load().temperature == 0.2


USER_CATALOGS = [  # a file that cannot be read: the command stops, naming it
    b"[models.x]\nname = '\xff'\n",
    b"models = 3\n",
    b"x = " + b"[" * 50_000 + b"]" * 50_000 + b"\n",
]
USER_ENTRIES = [  # one bad entry: left out, the rest of the catalog kept
    b"[models]\nx = 'just text'\n",
    b"[models.mine]\nname='m'\nrepo='o/r'\nlicense='x'\ngated=false\nparams_b='1.5'\n"
    b"context=4096\ntasks=['chat']\nquants=['Q4_K_M']\narch={}\n",
    b"[models.qwen2.5-1.5b-instruct]\ncontext = 'long'\n",
    b"[models.qwen2.5-1.5b-instruct]\nparams_b = nan\n",
    b"[models.qwen2.5-1.5b-instruct.arch]\nlayers = -3\n",
    b"[models.qwen2.5-1.5b-instruct]\ntasks = [1, [2]]\n",
    b"[models.qwen2.5-1.5b-instruct]\nquants = [4]\n",
    b'[models."Evil\\u001b]0;x\\u0007"]\nname="m"\n',
]


@pytest.mark.parametrize("content", USER_CATALOGS)
def test_damaged_user_catalog_names_the_file(content):
    file = paths().user_catalog
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        catalog.load()
    assert str(file) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("content", USER_ENTRIES)
def test_a_damaged_user_entry_is_left_out_in_one_plain_line(content):
    file = paths().user_catalog
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(content)
    said: list[str] = []
    assert len(catalog.load(warn=said.append)) >= 20
    assert len(said) == 1 and said[0].startswith(f"{file}: model ")
    assert "\n" not in said[0] and not any(c in said[0] for c in "\x1b\x07")


def test_damaged_user_catalog_from_the_command_line():
    file = paths().user_catalog
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(b"models = 3\n")
    result = run_cli("recommend")
    assert result.returncode == 1 and str(file) in result.stderr
    assert "Traceback" not in result.stderr


REGISTRIES = [
    b"[]",
    b'"text"',
    b'{"a": 3}',
    b'{"a": {"path": 5}}',
    b'{"a": {"path": "/x", "files": "abc"}}',
    b'{"a": {"path": "/x", "sha256": [1]}}',
    b"\xff\xfe{}",
    b"{" * 100_000,
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a": {"path": "/x"',
]


@pytest.mark.parametrize("content", REGISTRIES)
def test_damaged_models_json_is_one_line(content):
    file = paths().data_dir / "models.json"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(content)
    with pytest.raises(EdgechatError) as err:
        registry.records()
    assert "models.json is damaged" in str(err.value) and "\n" not in str(err.value)


def test_damaged_models_json_from_the_command_line():
    file = paths().data_dir / "models.json"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps({"a": ["not", "a", "record"]}))
    for argv in (["models", "list"], ["models", "rm", "a"], ["chat", "--model", "a", "hi"]):
        result = run_cli(*argv)
        assert result.returncode == 1 and "move it aside" in result.stderr, argv
        assert "Traceback" not in result.stderr


def test_login_never_takes_the_token_from_the_command_line(tmp_path):
    env = {
        "HF_HOME": str(tmp_path / "hf"),
        "HF_ENDPOINT": "http://127.0.0.1:9",  # unreachable: the token stays unchecked
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
    }
    refused = run_cli("login", "--token", "hf_secretFROMargv123", env=env)
    assert refused.returncode == 1 and "process list" in refused.stderr
    assert not (tmp_path / "hf" / "token").exists()
    from_env = run_cli("login", env={**env, "HF_TOKEN": "hf_secretFROMenv123"})
    assert from_env.returncode == 0, from_env.stderr
    assert (tmp_path / "hf" / "token").read_text().strip() == "hf_secretFROMenv123"
    assert "hf_secretFROMenv123" not in from_env.stdout + from_env.stderr
