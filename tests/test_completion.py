"""Shell completion scripts from the real parser, sourced in a real bash."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from support.cli import run_main

from edgechat.cli import build_parser


def complete_in_bash(script: str, line: str) -> list[str]:
    """What bash offers for ``line`` once the script is sourced (as Tab would ask)."""
    words = line.split(" ")
    program = (
        'source "$1"\n'
        f"COMP_LINE={line!r}; COMP_POINT=${{#COMP_LINE}}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        "_shtab_edgechat\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(
        ["bash", "-c", program, "bash", script], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory):
    result = run_main("completion", "bash")
    assert result.returncode == 0, result.stderr
    path = tmp_path_factory.mktemp("completion") / "edgechat.bash"
    path.write_text(result.stdout)
    return str(path)


@pytest.mark.subprocess
def test_bash_completes_subcommands_options_and_choices(bash_script):
    assert set(complete_in_bash(bash_script, "edgechat sum")) == {"summarise", "summarize"}
    assert "completion" in complete_in_bash(bash_script, "edgechat ")
    assert complete_in_bash(bash_script, "edgechat models p") == ["pull"]
    assert complete_in_bash(bash_script, "edgechat summarise --len") == ["--length"]
    assert complete_in_bash(bash_script, "edgechat summarise --length ") == [
        "short",
        "medium",
        "long",
    ]
    assert "--combine" in complete_in_bash(bash_script, "edgechat summarise --c")


@pytest.mark.subprocess
def test_zsh_and_fish_scripts_name_every_command():
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    zsh = run_main("completion", "zsh").stdout
    fish = run_main("completion", "fish").stdout
    assert zsh.startswith("#compdef edgechat")
    for name in commands:
        assert f"-a {name} " in fish
    assert "-l length -x -a 'short medium long'" in fish
    for shell, text in (("zsh", zsh), ("fish", fish)):
        if shutil.which(shell):  # syntax-check where the shell is installed
            check = subprocess.run([shell, "-n"], input=text, capture_output=True, text=True)
            assert check.returncode == 0, check.stderr
    assert run_main("completion", "tcsh").returncode == 2  # a usage error
