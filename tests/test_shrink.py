"""`edgechat shrink` on real models: a whole run on a tiny full-precision llama, Ctrl-C in
the middle of one, the refusals, and the figures it rests on (a kept reference judges as
a live one does; `quality` keeps a receipt)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support.cli import run_cli

from edgechat.cli import main
from edgechat.facts.gguf import inspect_file
from edgechat.lab.quality import chunks_of, compare, judge, reference
from edgechat.llama.engine import Engine
from edgechat.models import receipts
from edgechat.planning.plan import RunPlan

LICENCE = Path("/usr/share/common-licenses/GPL-3")


def _text(size: int = 1600) -> str:
    """About ``size`` tokens of the tiny model's byte-level vocabulary."""
    if LICENCE.exists():
        return LICENCE.read_text()[:size]
    return "\n".join(
        f"Line {i}: the council met on day {i % 28 + 1} and the library opens at {i % 12} o'clock."
        for i in range(300)
    )[:size]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "notes.txt"
    path.write_text(_text())
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A two-layer F32 llama with random weights and a byte-level vocabulary: a source
    that quantises and runs in moments (what the run does is the test, not its wording)."""
    from support.tiny_llama import write_tiny_llama

    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-f32.gguf")


def shrink_args(source: Path, text: Path, work: Path, *more: str) -> list[str]:
    # One thread: a tiny model gains nothing from two, and loses much on a busy machine.
    options = ["--ctx", "64", "--types", "Q4_K_M", "--threads", "1", "--work", str(work)]
    return ["shrink", str(source), "--text", str(text), *options, *more]


def leftovers(*folders: Path) -> list[Path]:
    """Anything half-written: temporary and partial files."""
    return [
        p
        for folder in folders
        for p in folder.rglob("*")
        if p.name.endswith((".partial", ".tmp")) or ".partial" in p.name
    ]


@pytest.mark.model
@pytest.mark.subprocess
def test_ctrl_c_keeps_whole_files_and_the_same_command_carries_on(tiny, text_file, tmp_path):
    work = tmp_path / "work"
    home = tmp_path / "home"
    env = {"EDGECHAT_HOME": str(home)}
    child = subprocess.Popen(
        [sys.executable, "-m", "edgechat", *shrink_args(tiny, text_file, work)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    seen = []
    for line in child.stderr:  # not a terminal: a line a stage
        seen.append(line)
        if "Q4_K_M+imatrix: quantising" in line:
            child.send_signal(signal.SIGINT)
            break
    out, err = child.communicate(timeout=120)
    err = "".join(seen) + err
    assert child.returncode == 130, err
    assert "interrupted; kept in" in err and "run the same command to carry on" in err
    assert not leftovers(work, home)
    assert not (work / "reference.npy").exists()
    kept = sorted(p.name for p in work.glob("*.gguf"))
    assert "imatrix.gguf" in kept
    for name in kept:
        if name != "imatrix.gguf":
            inspect_file(work / name)  # whole: the header accounts for every byte
    for line in (home / "data" / "receipts.jsonl").read_text().splitlines():
        json.loads(line)  # every receipt whole

    # The same command again: what was finished is carried over, the rest is done.
    again = run_cli(*shrink_args(tiny, text_file, work, "--json"), env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert set(result["reused"]) <= {"Q4_K_M"}
    assert {c["id"] for c in result["candidates"]} == {"Q4_K_M", "Q4_K_M+imatrix"}
    for c in result["candidates"]:
        f = c["figures"]
        assert f["kl_mean"] >= 0 and f["kl_p99"] >= 0 and 0 <= f["top1"] <= 1
        assert f["ppl_ratio"] > 0 and c["size"] > 0 and c["ram_needed"] > 0
        assert c["tokens_per_s"] and c["tokens_per_s"] > 0
    assert result["text"]["held_out"]["chunks"] >= 1
    assert result["text"]["calibration"]["chunks"] >= 1
    verdict = result["verdict"]
    assert verdict["budget"]["task"] == "chat" and verdict["why"]
    assert verdict["pick"] in (None, "Q4_K_M", "Q4_K_M+imatrix")
    assert not leftovers(work, home)
    saved = [json.loads(x) for x in (home / "data" / "receipts.jsonl").read_text().splitlines()]
    assert {r["made"].get("imatrix") for r in saved if r["kind"] == "shrink"} == {True, False}


@pytest.mark.model
@pytest.mark.subprocess  # shrink times each candidate in bench's child process
def test_the_whole_run_in_one_command(tiny, text_file, tmp_path, capsys, edgechat_home):
    work = tmp_path / "work"
    args = shrink_args(tiny, text_file, work, "--budget", "kld=10,p99=off,ppl=off,top1=0.001")
    rc = main([*args, "--keep", "tiny-shrunk"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "[1/" in out.err and "left" in out.err  # a stage and the ETA on stderr
    lines = out.out.splitlines()
    assert any(line.startswith("candidate") for line in lines)
    assert "mean KLD against the source (log scale, lower is better)" in out.out
    paths = ("source", "text", "work", "kept")  # lines that name files
    assert [line for line in lines if len(line) > 80 and not line.startswith(paths)] == []
    assert "budget    chat: mean KLD <= 10, top-1 >= 0.1%" in out.out
    assert "verdict   Q4_K_M" in out.out and "kept      Q4_K_M" in out.out
    rc = main(["models", "info", "tiny-shrunk:Q4_K_M", "--json"])
    info = json.loads(capsys.readouterr().out)
    assert info["quality"][0]["kind"] == "shrink"  # its receipt followed it by hash
    assert info["quality"][0]["text"]["name"] == "notes.txt, held-out part"


@pytest.mark.model
def test_bad_input_gets_one_line(tiny, starter_path, text_file, tmp_path, capsys):
    def refusal(*argv: str) -> str:
        rc = main(list(argv))
        err = capsys.readouterr().err.strip()
        assert rc == 1 and "\n" not in err and "Traceback" not in err, err
        return err

    short = tmp_path / "short.txt"
    short.write_text("A few words are not enough to calibrate and to score.")
    binary = tmp_path / "data.bin"
    binary.write_bytes(bytes(range(256)) * 8)
    work = str(tmp_path / "w")
    assert "already Q4_1 (4 bits a weight or fewer)" in refusal(
        "shrink", str(starter_path), "--text", str(text_file), "--work", work
    )
    assert "looks like a binary file" in refusal(
        "shrink", str(tiny), "--text", str(binary), "--work", work
    )
    assert "--keep my model: an id is letters" in refusal(
        "shrink", str(tiny), "--text", str(text_file), "--keep", "my model", "--work", work
    )
    assert "tokens; at least 160 are needed" in refusal(
        "shrink", str(tiny), "--text", str(short), "--ctx", "64", "--work", work
    )
    for flag, value, words in (
        ("--budget", "kld=lots", "kld=lots is not a number"),
        ("--budget", "speed=2", "'speed' is not a measure"),
        ("--types", "Q4_K_M,Q9", "unknown type Q9"),
    ):
        with pytest.raises(SystemExit) as usage:
            main(["shrink", str(tiny), "--text", str(text_file), flag, value])
        assert usage.value.code == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith(f"edgechat shrink: error: argument {flag}: ") and words in last


@pytest.mark.model
@pytest.mark.subprocess  # quantising runs in a child process
def test_a_kept_reference_judges_as_the_live_one(tiny, tmp_path):
    from edgechat.lab.quantize import quantize

    text = _text(1200)
    q4 = quantize(tiny, tmp_path / "tiny-q4.gguf", "Q4_K_M").path
    one = {"n_ctx": 128, "n_threads": 1, "n_threads_batch": 1}  # a tiny model: one is quickest
    with Engine(RunPlan(tiny, **one)) as ref, Engine(RunPlan(q4, **one)) as model:
        live = compare(model, ref, text, 128)
        kept = reference(ref, chunks_of(ref, text, 128), tmp_path / "ref.npy")
        judged = judge(model, kept)
    assert judged.tokens_scored == live.tokens_scored
    for name in ("ppl", "ppl_ref", "kl_mean", "kl_p99", "top1_agreement"):
        assert getattr(judged, name) == pytest.approx(getattr(live, name), rel=1e-6), name
    assert 0 < live.kl_mean <= live.kl_p99  # a 4-bit quant differs; the tail is above the mean


@pytest.mark.model
@pytest.mark.subprocess  # quantising runs in a child process
def test_quality_keeps_a_receipt(tiny, text_file, tmp_path, capsys):
    from edgechat.lab.quantize import quantize

    q8 = quantize(tiny, tmp_path / "tiny-q8.gguf", "Q8_0").path
    rc = main(
        ["quality", str(q8), "--ref", str(tiny), "--text", str(text_file), "--ctx", "64"]
        + ["--threads", "1", "--json"]
    )
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    receipt = out["receipt"]
    assert receipt["kind"] == "quality" and receipt["model"]["quant"] == "Q8_0"
    assert receipt["ref"]["quant"] == "ALL_F32" and receipt["text"]["name"] == "notes.txt"
    assert receipt["figures"]["kl_p99"] == out["kl_p99"]
    assert receipts.latest(q8).figures.kl_mean == out["kl_mean"]
