"""Hostile GGUF files (tests/hostile_gguf.py) through inspect, estimate, import and chat.

Every case ends in one line: refused from its header before llama.cpp sees it (no
SIGABRT, no allocation from a count the file cannot hold), refused by llama.cpp in a
child process on import, or stopped with a message while running (NaN scores, a
template that loops). Nothing is ever accepted that llama.cpp then cannot load.
"""

from __future__ import annotations

import os
import time

import pytest
from support import hostile_gguf as hostile
from support.cli import run_cli, run_main

from edgechat.errors import EdgechatError
from edgechat.facts.gguf import GGUFError, inspect_file
from edgechat.facts.probe import check_loads
from edgechat.llama import bounded
from edgechat.models import registry

HEADER = [n for n, e in hostile.EXPECT.items() if e == "header"]
LLAMA = [n for n, e in hostile.EXPECT.items() if e == "llama"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    made = {name: hostile.write(name, folder) for name in hostile.CASES}
    made["base"] = hostile.write_base(folder)
    return made


def test_the_generator_covers_every_class():
    classes = {c for c, _ in hostile.CASES.values()}
    assert classes >= {
        "structure", "truncated", "counts", "duplicates", "asserts", "types", "nan",
        "architecture", "alignment", "vocabulary", "tensors", "offsets", "text", "size",
        "llama.cpp refuses", "runs wrong",
    }  # fmt: skip
    assert len(hostile.CASES) >= 70


@pytest.mark.subprocess
def test_the_base_is_a_model_llama_cpp_runs(files):
    check_loads(files["base"])
    chat = run_cli("chat", "--model", str(files["base"]), "--max-tokens", "4", "Hi")
    assert chat.returncode == 0, chat.stderr


@pytest.mark.parametrize("name", HEADER)
def test_refused_from_the_header_in_one_line(files, name):
    started = time.monotonic()
    with pytest.raises(GGUFError) as err:
        inspect_file(files[name])
    message = str(err.value)
    assert "\n" not in message and str(files[name]) in message
    assert time.monotonic() - started < 30  # refused at once, not after reading 2^40 items


@pytest.mark.subprocess
@pytest.mark.parametrize(
    "name", ["block-count-0", "expert-count-9999", "alignment-u64", "tensor-dims-overflow"]
)
def test_what_would_abort_llama_cpp_never_reaches_it(files, name):
    """llama.cpp ends the process (SIGABRT) on these; edgechat says one line first."""
    for argv in (
        ["chat", "--model", str(files[name]), "--max-tokens", "4", "Hi"],
        ["models", "import", str(files[name])],
        ["estimate", str(files[name])],
    ):
        result = run_cli(*argv)
        assert result.returncode == 1, (argv, result.stderr)
        assert result.stderr.startswith("edgechat: ") and result.stderr.count("\n") == 1
    assert registry.records() == {}


@pytest.mark.subprocess
@pytest.mark.parametrize("name", LLAMA)
def test_inspect_estimate_import_ask_llama_cpp_and_chat_says_why(files, name):
    inspect_file(files[name])  # the header alone is sound: only llama.cpp knows better
    for argv in (["inspect"], ["estimate"], ["models", "import"]):
        result = run_main(*argv, str(files[name]))  # llama.cpp is asked in a child
        assert result.returncode == 1 and "llama.cpp cannot load" in result.stderr, argv
        assert result.stderr.count("\n") == 1
    assert registry.records() == {}
    if name == LLAMA[0]:
        chat = run_cli("chat", "--model", str(files[name]), "--max-tokens", "4", "Hi")
        assert chat.returncode == 1 and chat.stderr.count("\n") == 1, chat.stderr


@pytest.mark.subprocess
def test_nan_scores_are_an_error_not_an_empty_reply(files):
    chat = run_cli("chat", "--model", str(files["weights-nan"]), "--max-tokens", "4", "Hi")
    assert chat.returncode == 1 and "NaN" in chat.stderr and not chat.stdout.strip()


def test_a_looping_chat_template_is_stopped(files, monkeypatch):
    from edgechat.llama.engine import Engine
    from edgechat.planning.plan import RunPlan, Sampling

    monkeypatch.setattr(bounded, "RENDER_S", 0.5)
    with Engine(RunPlan(files["template-loop"], n_ctx=512)) as engine:
        started = time.monotonic()
        with pytest.raises(EdgechatError, match="chat template ran too long"):
            engine.chat([{"role": "user", "content": "Hi"}], Sampling(max_tokens=4)).collect()
        assert time.monotonic() - started < 30  # stopped, not hours later


@pytest.mark.subprocess
def test_escapes_in_metadata_never_reach_the_terminal(files):
    path = files["general-name-escapes"]
    shown = run_main("inspect", str(path))
    assert shown.returncode == 0 and "pwned" in shown.stdout
    assert "\x1b" not in shown.stdout and "\x07" not in shown.stdout and "\x9b" not in shown.stdout
    imported = run_main("models", "import", str(path), "--id", "evil\x1b[2J")
    listed = run_main("models", "list")
    for out in (imported.stdout + imported.stderr, listed.stdout):
        assert "\x1b" not in out
    assert "\x1b" not in run_main("inspect", str(files["general-name-invalid-utf8"])).stdout


@pytest.mark.subprocess
def test_only_regular_files(tmp_path, files):
    fifo = tmp_path / "x.gguf"
    os.mkfifo(fifo)
    with pytest.raises(GGUFError, match="not a regular file"):
        inspect_file(fifo)
    for argv in (["inspect", str(fifo)], ["models", "import", str(fifo)]):
        result = run_cli(*argv, timeout=30)
        assert result.returncode == 1 and "not a regular file" in result.stderr
    text = tmp_path / "notes.txt"
    os.mkfifo(text)
    summary = run_cli("summarise", str(text), timeout=30)
    assert summary.returncode == 1 and "not a regular file" in summary.stderr
    with pytest.raises(GGUFError, match="not a regular file"):
        inspect_file("/dev/zero")


@pytest.mark.subprocess
def test_nothing_accepted_that_llama_cpp_cannot_load(files):
    """What the header check accepts, llama.cpp loads, or the commands ask it (above)."""
    for name, path in files.items():
        try:
            inspect_file(path)
        except GGUFError:
            continue
        if hostile.EXPECT.get(name) == "llama":
            continue  # covered above: import asks llama.cpp
        check_loads(path)
