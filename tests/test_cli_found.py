"""What a newcomer found at the command line (issue 23): range checks on every numeric
flag, `models rm` of a copy, `doctor` on unusable folders, output paths that must
exist and are replaced only with --force, a typo in a quant named before any network,
`recommend` and `estimate` with the installed models and the KV cache type.

In process through ``main([...])`` where the subject is argument and error handling.
"""

from __future__ import annotations

import json

import pytest

from edgechat.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """``edgechat ARGV`` in this process: exit code (argparse's SystemExit too), out, err."""
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


# -- 2. every numeric flag of serve is range-checked like the others --------------------


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--port", "99999"], "port (0: any free one) must be 0 to 65535, got 99999"),
        (["--port", "-1"], "must be 0 to 65535, got -1"),
        (["--port", "http"], "must be a whole number (0 to 65535)"),
        (["--queue", "0"], "requests that may wait must be 1 to"),
        (["--parallel", "0"], "requests generated at once must be 1 to"),
        (["--parallel", "1e9"], "must be a whole number"),
        (["--ctx", "9" * 30], "context size in tokens must be 512 to"),
        (["--temperature", "nan"], "must be a finite number"),
    ],
)
def test_serve_flags_out_of_range_are_usage_errors(capsys, argv, words):
    code, _, err = run(capsys, "serve", *argv)
    assert code == 2 and words in err and "Traceback" not in err
    assert "host" not in err.split("error:")[-1]  # the port is not blamed on the host


@pytest.mark.parametrize(
    "argv",
    [
        ["summarise", "x.txt", "--temperature", "9"],
        ["summarise", "x.txt", "--seed", "-5"],
        ["history", "search", "x", "--limit", "0"],
    ],
)
def test_the_other_numeric_flags_go_through_the_same_checks(capsys, argv):
    code, _, err = run(capsys, *argv)
    assert code == 2 and " must be " in err


# -- 5. models rm says what a --copy import freed ----------------------------------------


@pytest.mark.model  # the import asks llama.cpp, in a child process, whether it loads
@pytest.mark.subprocess
def test_removing_a_copied_import_says_what_it_freed(capsys, starter_path, edgechat_home):
    code, out, err = run(capsys, "models", "import", str(starter_path), "--copy", "--id", "mine")
    assert code == 0, err
    copied = edgechat_home / "data" / "models" / starter_path.name
    size = copied.stat().st_size
    code, out, _ = run(capsys, "models", "rm", "mine:Q4_1", "--json")
    assert code == 0 and json.loads(out)["freed"] == size and not copied.exists()
    assert starter_path.exists()  # the original is never touched


# -- 11. a quant that does not exist is named before the hub is asked --------------------


@pytest.mark.parametrize(
    "spec, words",
    [
        ("qwen2.5-0.5b-instruct:Q9", "Q9 is not a quant type llama.cpp knows"),
        ("qwen2.5-0.5b-instruct:q4_k_x", "Q4_K_X is not a quant type"),
        ("someone/repo-GGUF:Q9", "Q9 is not a quant type"),
    ],
)
def test_pulling_a_quant_that_does_not_exist_names_it_offline(capsys, monkeypatch, spec, words):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: never asked
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # set by an earlier command here
    code, _, err = run(capsys, "models", "pull", spec)
    assert code == 1 and words in err, err
    assert "unreachable" not in err and "cannot reach" not in err
    if spec.startswith("qwen2.5-0.5b-instruct"):
        from edgechat.planning import catalog

        quants = catalog.load()["qwen2.5-0.5b-instruct"].quants
        assert f"it offers {', '.join(quants)}" in err
