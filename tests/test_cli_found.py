"""What a newcomer found at the command line (issue 23): range checks on every numeric
flag, `models rm` of a copy, `doctor` on unusable folders, output paths that must
exist and are replaced only with --force, a typo in a quant named before any network,
`recommend` and `estimate` with the installed models and the KV cache type.

In process through ``main([...])`` where the subject is argument and error handling.
"""

from __future__ import annotations

import json
import os
import tempfile

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
        (["--parallel", "0"], "replies generated at once must be 1 to"),
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


# -- 8. an output path: its folder must exist, a file there is replaced only with --force -


@pytest.fixture
def doc(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("The council met on Tuesday. The library opens in 2027.\n")
    return path


def test_summarise_out_into_a_missing_folder_fails_before_any_work(capsys, doc, tmp_path):
    target = tmp_path / "nonexistent" / "dir" / "x.md"
    code, out, err = run(capsys, "summarise", str(doc), "--out", str(target))
    assert code == 1 and "does not exist" in err and err.count("\n") == 1
    assert not (tmp_path / "nonexistent").exists() and "loaded" not in err and not out


def test_summarise_out_over_a_file_needs_force(capsys, doc, tmp_path):
    target = tmp_path / "summary.md"
    target.write_text("keep me")
    code, _, err = run(capsys, "summarise", str(doc), "--out", str(target))
    assert code == 1 and "already exists; pass --force" in err
    assert target.read_text() == "keep me"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from support import hostile_gguf

    return hostile_gguf.write_base(tmp_path_factory.mktemp("tiny"))


@pytest.mark.model
@pytest.mark.subprocess  # quantising runs in a child process
def test_quantize_never_makes_folders_nor_overwrites_without_force(capsys, tiny, tmp_path):
    missing = tmp_path / "nonexistent" / "q.gguf"
    code, _, err = run(capsys, "quantize", str(tiny), str(missing), "--type", "Q8_0")
    assert code == 1 and "does not exist" in err and not missing.parent.exists()
    there = tmp_path / "q.gguf"
    there.write_bytes(b"an older model")
    code, _, err = run(capsys, "quantize", str(tiny), str(there), "--type", "Q8_0")
    assert code == 1 and "already exists; pass --force" in err
    assert there.read_bytes() == b"an older model"
    code, out, err = run(capsys, "quantize", str(tiny), str(there), "--type", "Q8_0", "--force")
    assert code == 0, err
    assert there.read_bytes()[:4] == b"GGUF"


@pytest.mark.parametrize(
    "target, words",
    [
        ("{tmp}", "is a folder"),
        ("{tmp}/file.txt/x.md", "is not a folder"),
        ("{tmp}/" + "n" * 300 + ".md", "the name is too long"),
    ],
)
def test_an_output_path_the_file_system_refuses_is_one_line(capsys, doc, tmp_path, target, words):
    (tmp_path / "file.txt").write_text("x")
    path = target.format(tmp=tmp_path)
    code, _, err = run(capsys, "summarise", str(doc), "--out", path, "--force")
    assert code == 1 and words in err and err.count("\n") == 1, err


# -- 6. doctor fails the folders every other command would then fail on ------------------


def _unusable_homes(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    homes = {"a file": a_file, "under a file": a_file / "deeper", "under /proc": "/proc/edgechat"}
    try:  # /sys refuses new folders even to root: the unwritable case a root test can reach
        os.rmdir(tempfile.mkdtemp(dir="/sys"))
    except OSError:
        homes["unwritable"] = "/sys/edgechat"
    return homes


def test_doctor_fails_folders_that_cannot_be_used_and_names_the_fix(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    for label, home in _unusable_homes(tmp_path).items():
        monkeypatch.setenv("EDGECHAT_HOME", str(home))
        code, out, _ = run(capsys, "doctor", "--json")
        folders = [c for c in json.loads(out) if c["name"].endswith(" dir")]
        assert code == 1 and len(folders) == 3, label
        for check in folders:
            assert check["status"] == "fail" and "cannot be used" in check["detail"], label
            assert "EDGECHAT_HOME" in check["fix"], label
        code, _, err = run(capsys, "config", "set", "ctx", "2048")  # and the commands agree
        assert code == 1 and err.startswith("edgechat: ") and err.count("\n") == 1, (label, err)


def test_doctor_still_passes_a_home_that_does_not_exist_yet(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("EDGECHAT_HOME", str(tmp_path / "new" / "home"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    code, out, _ = run(capsys, "doctor", "--json")
    folders = [c for c in json.loads(out) if c["name"].endswith(" dir")]
    assert [c["status"] for c in folders] == ["ok"] * 3
    assert not (tmp_path / "new").exists()  # doctor looks; it leaves nothing behind


# -- 9, 12. recommend: the installed models are ranked; nothing fitting is said; KV cache --


def _recommend(capsys, *argv: str) -> dict:
    code, out, err = run(capsys, "recommend", "--json", "--all", *argv)
    assert code == 0, err
    return json.loads(out)


@pytest.mark.subprocess  # models import asks llama.cpp in a child whether the file loads
def test_recommend_ranks_the_installed_models_and_says_when_nothing_fits(capsys, gemma_path):
    assert run(capsys, "models", "import", str(gemma_path))[0] == 0  # a base model
    tiny = _recommend(capsys, "--memory", "100M")
    ids = [c["id"] for c in tiny["choices"]]
    assert "smollm2-135m-instruct:Q4_1" in ids  # the starter takes part
    assert not any(c["fit"] != "does not fit" for c in tiny["choices"])
    needs = [c["ram_bytes"] for c in tiny["choices"]]
    assert needs == sorted(needs)  # nearest to fitting first, not the biggest
    assert (
        tiny["nothing_fits"].startswith("nothing fits here") and "--ctx 512" in tiny["nothing_fits"]
    )
    code, out, _ = run(capsys, "recommend", "--memory", "100M")
    assert "nothing fits here" in out and " ● smollm2-135m-instruct:Q4_1 " in out  # marked
    roomy = _recommend(capsys, "--memory", "16G")
    first = roomy["choices"][0]
    assert first["fit"] == "comfortable" and roomy["nothing_fits"] is None
    assert any(c["installed"] for c in roomy["choices"])  # ranked on its merits, not first
    assert not any(":Q4_K_M" in i and "gemma-3-270m:" in i for i in ids)  # base: no chat
    summarise = _recommend(capsys, "--memory", "16G", "--task", "summarise")
    assert any(c["installed"] and c["id"].startswith("gemma-3-270m") for c in summarise["choices"])


@pytest.mark.subprocess  # estimate of a file asks llama.cpp in a child whether it loads
def test_recommend_and_estimate_plan_with_the_kv_cache_type(capsys, starter_path):
    f16 = {c["id"]: c["ram_bytes"] for c in _recommend(capsys, "--memory", "16G")["choices"]}
    q4 = _recommend(capsys, "--memory", "16G", "--kv-cache", "q4_0")
    assert q4["kv_cache"] == "q4_0"
    same = [c for c in q4["choices"] if c["id"] in f16]  # a smaller cache may pick a bigger quant
    assert len(same) > 10 and all(c["ram_bytes"] < f16[c["id"]] for c in same)
    sizes = {}
    for kind in ("f16", "q8_0", "q4_0"):
        code, out, err = run(capsys, "estimate", "starter", "--kv-cache", kind, "--json")
        assert code == 0, err
        sizes[kind] = json.loads(out)["parts"]["KV cache"]["ram_bytes"]
    assert sizes["f16"] > sizes["q8_0"] > sizes["q4_0"]
    code, _, err = run(capsys, "estimate", "starter", "--kv-cache", "q3")
    assert code == 2 and "invalid choice" in err
