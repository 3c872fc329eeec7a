"""The `edgechat` command as a user runs it, on the real model: in this process for its
arguments, settings and messages; in a child process where the process is the point
(start-up imports, standard input from a pipe)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys

import pytest
from support.cli import run_cli, run_main


@pytest.mark.subprocess
def test_help_is_fast_because_heavy_modules_stay_unimported():
    code = (
        "import sys\n"
        "from edgechat.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = ('llama_cpp', 'textual', 'huggingface_hub', 'numpy', 'jinja2', 'psutil')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "usage: edgechat" in out.stdout
    assert out.stdout.strip().endswith("[]"), out.stdout


def test_version():
    from edgechat import __version__

    result = run_main("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"edgechat {__version__}"


def test_usage_error_exits_2():
    result = run_main("chat", "--ctx", "lots")
    assert result.returncode == 2 and "must be a whole number (512 to" in result.stderr


@pytest.mark.model
@pytest.mark.subprocess
def test_piped_chat_answers_and_exits_0():
    result = run_cli("chat", "--plain", "--max-tokens", "48", input="Name three colours.\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "Traceback" not in result.stderr


@pytest.mark.model
@pytest.mark.subprocess
def test_piped_chat_answers_each_line_and_runs_commands():
    script = (
        "Hello!\n/stats\n/system You are a pirate.\n/system\nWhat are you?\n"
        "/reset\n/bogus\n/quit\nNot answered.\n"
    )
    result = run_cli("chat", "--plain", "--seed", "1", "--max-tokens", "64", input=script)
    assert result.returncode == 0, result.stderr
    replies = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(replies) >= 2
    err = result.stderr
    assert "reply " in err and "tok/s" in err and "context " in err  # /stats
    assert "system prompt set" in err and "system prompt: You are a pirate." in err
    assert "conversation cleared" in err and "unknown command /bogus" in err


@pytest.mark.model
def test_multiline_block_is_one_message():
    script = '"""\nLine one of the message.\nLine two of the message.\n"""\n'
    result = run_main("chat", "--plain", "--json", input=script)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 1
    assert records[0]["prompt"] == "Line one of the message.\nLine two of the message."


@pytest.mark.model
def test_one_shot_json():
    result = run_main("chat", "--json", "--temperature", "0", "--max-tokens", "20", "Say hello.")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["reply"].strip() and record["prompt"] == "Say hello."
    assert record["stats"]["gen_tokens"] <= 20 and record["stats"]["n_ctx"] == 4096
    assert record["model"] == "smollm2-135m-instruct:Q4_1"  # the id, not the file's name


@pytest.mark.model
def test_no_command_opens_a_chat():
    assert run_main("config", "set", "max_tokens", "16").returncode == 0
    result = run_main(input="Hi\n")
    assert result.returncode == 0 and result.stdout.strip()


@pytest.mark.model
def test_small_context_drops_old_turns_and_says_so():
    line = "Tell me about rivers, mountains, forests, deserts and oceans in detail please. " * 10
    args = ("chat", "--plain", "--ctx", "512", "--max-tokens", "40")
    result = run_main(*args, input=f"{line}\n" * 3)  # the third no longer fits beside two
    assert result.returncode == 0, result.stderr
    assert "context full" in result.stderr


def test_model_path_and_bad_model_errors(tmp_path, starter_path):
    ok = run_main("chat", "--model", str(starter_path), "--max-tokens", "8", "Hello")
    assert ok.returncode == 0, ok.stderr
    not_gguf = tmp_path / "notes.txt"
    not_gguf.write_text("hello")
    for model, message in [
        (str(not_gguf), "not a GGUF model file"),
        (str(tmp_path / "missing.gguf"), "no model file at"),
        ("no-such-model:Q4_K_M", "no installed model 'no-such-model:Q4_K_M'"),
    ]:
        result = run_main("chat", "--model", model, "Hello")
        assert result.returncode == 1
        assert message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.model
def test_starter_id_resolves():
    result = run_main("chat", "--model", "smollm2-135m-instruct:Q4_1", "--max-tokens", "4", "Hi")
    assert result.returncode == 0, result.stderr


# -- config and paths ---------------------------------------------------------------------


def test_config_show_set_unset(tmp_path, edgechat_home, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shown = json.loads(run_main("config", "--json").stdout)
    assert shown["settings"]["ctx"] == 4096
    assert shown["paths"]["config_dir"].startswith(str(edgechat_home))

    assert run_main("config", "set", "ctx", "2048").returncode == 0
    shown = json.loads(run_main("config", "--json").stdout)
    assert shown["settings"]["ctx"] == 2048
    cfg = edgechat_home / "config" / "config.toml"
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600

    bad = run_main("config", "set", "ctx", "big")
    assert bad.returncode == 1 and "must be a whole number (512 to" in bad.stderr
    unknown = run_main("config", "set", "colour", "red")
    assert unknown.returncode == 1 and "unknown setting 'colour'" in unknown.stderr

    assert run_main("config", "unset", "ctx").returncode == 0
    shown = json.loads(run_main("config", "--json").stdout)
    assert shown["settings"]["ctx"] == 4096
    assert list(tmp_path.iterdir()) == [], "nothing is written to the current directory"


def test_default_model_from_config_is_used(starter_path, tmp_path):
    model = tmp_path / "my-chat-model.gguf"  # a chat model at another path than the starter
    try:
        os.link(starter_path, model)
    except OSError:  # another file system
        shutil.copyfile(starter_path, model)
    assert run_main("config", "set", "default_model", str(model)).returncode == 0
    text = "The council met on Tuesday. The library will cost four million euros.\n"
    result = run_main("summarise", "-", "--json", input=text)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model_path"] == os.path.realpath(model)


def test_broken_config_is_a_clear_error(edgechat_home):
    cfg = edgechat_home / "config" / "config.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text("ctx = [unclosed\n")
    result = run_main("chat", "Hi")
    assert result.returncode == 1 and "not valid TOML" in result.stderr
