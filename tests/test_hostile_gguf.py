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


# -- chat templates: every error while read, compiled or rendered -------------------------

TEMPLATE = [n for n, e in hostile.EXPECT.items() if e == "template"]


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    from edgechat.cli import main

    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.model
@pytest.mark.parametrize("name", TEMPLATE)
def test_a_template_that_cannot_be_read_compiled_or_run_gives_way_with_a_warning(
    files, name, capsys
):
    """As llama.cpp's server does: the family format stands in, and the user is told."""
    code, out, err = _main(capsys, "chat", "--model", str(files[name]), "--max-tokens", "2", "Hi")
    assert code == 0, err
    warning = [line for line in err.splitlines() if "chat template" in line]
    assert len(warning) == 1 and "the ChatML format stands in for it" in warning[0], err
    assert "Traceback" not in err


@pytest.mark.model
@pytest.mark.parametrize(
    "name, words",
    [
        ("template-fails-on-history", "failed on this conversation (UndefinedError: "),
        ("template-refuses-history", "rejected the conversation: one question at a time"),
    ],
)
def test_a_conversation_the_template_cannot_render_is_one_line(files, name, words):
    from edgechat.llama.engine import Engine
    from edgechat.planning.plan import RunPlan, Sampling

    first = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    later = [*first, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "?"}]
    with Engine(RunPlan(files[name], n_ctx=512)) as engine:
        assert engine.info()["chat_template_problem"] is None  # a new chat renders
        engine.chat(first, Sampling(max_tokens=2)).collect()
        with pytest.raises(EdgechatError) as err:
            engine.chat(later, Sampling(max_tokens=2)).collect()
    assert words in str(err.value) and "\n" not in str(err.value)


# -- paths the file system refuses, in every command that takes a path --------------------

PATH_COMMANDS = [
    ["inspect", "{p}"],
    ["estimate", "{p}"],
    ["models", "import", "{p}"],
    ["models", "info", "{p}"],
    ["chat", "--model", "{p}", "Hi"],
    ["serve", "--model", "{p}"],
    ["bench", "{p}"],
    ["summarise", "{p}"],
    ["summarise", "--model", "{p}", "{doc}"],
    ["summarise", "{doc}", "--out", "{p}"],
    ["quality", "{p}", "--ref", "{base}", "--text", "{doc}"],
    ["quality", "{base}", "--ref", "{p}", "--text", "{doc}"],
    ["quality", "{base}", "--ref", "{base}", "--text", "{p}"],
    ["quantize", "{p}", "{out}", "--type", "Q8_0"],
    ["quantize", "{base}", "{p}", "--type", "Q8_0"],
    ["config", "set", "default_model", "{p}"],
]


@pytest.fixture(scope="module")
def bad_paths(tmp_path_factory):
    return hostile.hostile_paths(tmp_path_factory.mktemp("paths"))


PATH_KINDS = [
    "symlink-loop", "symlink-to-itself", "name-too-long", "path-too-long", "a-folder",
    "file-as-folder", "broken-link", "pipe", "nul-in-name",
]  # fmt: skip


@pytest.mark.parametrize("kind", PATH_KINDS)
def test_a_path_the_file_system_refuses_is_one_line_in_every_command(
    files, bad_paths, kind, tmp_path, capsys
):
    doc = tmp_path / "doc.txt"
    doc.write_text("The council met on Tuesday.\n")
    values = {"p": str(bad_paths[kind]), "base": str(files["base"]), "doc": str(doc)}
    values["out"] = str(tmp_path / "out.gguf")
    for argv in PATH_COMMANDS:
        code, _, err = _main(capsys, *(a.format(**values) for a in argv))
        shown = argv[0] + " " + " ".join(argv[1:3])
        assert code == 1, (kind, shown, err)
        assert err.startswith("edgechat: ") and err.count("\n") == 1, (kind, shown, err)
    assert registry.records() == {}
    assert not (tmp_path / "out.gguf").exists()
