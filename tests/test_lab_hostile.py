"""Lab files are untrusted input (issue 30, items 9-11; issue 31, items 1, 8 and the lab
parts of 14): no command writes over one of its inputs (through a link or not); a
matrix that would ruin a model is refused, and a pipe, a device or a loop is named;
shrink's manifest is believed only where it checks out; quantize stops on Ctrl-C and
leaves nothing half-written; calibrate and quantize say what is true."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support.cli import run_main
from support.tiny_llama import write_tiny_llama

from edgechat.errors import EdgechatError, InputError
from edgechat.lab import imatrix

TEXT = "The council met on Friday and the library opens at nine. " * 40


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-f32.gguf")


@pytest.fixture
def lab(tmp_path, tiny) -> dict[str, Path]:
    """A model and a text the user gave, in a folder of their own."""
    model = tmp_path / "M.gguf"
    os.link(tiny, model) if tiny.stat().st_dev == tmp_path.stat().st_dev else None
    if not model.exists():
        model.write_bytes(tiny.read_bytes())
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    return {"model": model, "text": text}


def untouched(lab: dict[str, Path], before: dict[str, bytes]) -> bool:
    return all(lab[k].read_bytes() == before[k] for k in before)


def write_matrix(path: Path, sums, counts, name: str = "blk.0.attn_q.weight") -> Path:
    from gguf import GGUFValueType, GGUFWriter

    w = GGUFWriter(path, "")
    w.add_type("imatrix")
    w.add_key_value("imatrix.datasets", ["t.txt"], GGUFValueType.ARRAY, GGUFValueType.STRING)
    w.add_uint32("imatrix.chunk_count", 1)
    w.add_uint32("imatrix.chunk_size", 64)
    w.add_tensor(f"{name}.in_sum2", np.asarray(sums, dtype=np.float32))
    w.add_tensor(f"{name}.counts", np.asarray(counts, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def good_matrix(path: Path) -> Path:
    return write_matrix(path, np.full(256, 2.0), [64.0])


# -- 9: an output is never an input ------------------------------------------------------


def refused(ran, lab, before) -> None:
    assert ran.returncode == 1, ran.stderr
    assert "which this command reads" in ran.stderr and ran.stderr.count("\n") == 1
    assert untouched(lab, before)


@pytest.mark.parametrize("out", ["model", "text", "link to model", "hard link of text"])
def test_calibrate_never_writes_over_its_inputs(out, lab, tmp_path):
    before = {k: p.read_bytes() for k, p in lab.items()}
    target = {"model": lab["model"], "text": lab["text"]}.get(out)
    if out == "link to model":
        target = tmp_path / "link.gguf"
        target.symlink_to(lab["model"])
    elif out == "hard link of text":
        target = tmp_path / "hard.txt"
        os.link(lab["text"], target)
    ran = run_main(
        "calibrate", str(lab["model"]), "--text", str(lab["text"]), "--out", str(target), "--force"
    )
    refused(ran, lab, before)


def test_quantize_never_writes_over_its_inputs(lab, tmp_path):
    before = {k: p.read_bytes() for k, p in lab.items()}
    link = tmp_path / "link.gguf"
    link.symlink_to(lab["model"])
    args = ["quantize", str(lab["model"]), str(link), "--type", "Q8_0", "--force"]
    refused(run_main(*args), lab, before)
    matrix = good_matrix(tmp_path / "m.imatrix.gguf")
    lab["matrix"], before["matrix"] = matrix, matrix.read_bytes()
    args = ["quantize", str(lab["model"]), str(matrix), "--type", "Q4_K_M", "--force"]
    refused(run_main(*args, "--imatrix", str(matrix)), lab, before)
    args = ["quantize", str(lab["model"]), str(lab["text"]), "--type", "Q4_K_M", "--force"]
    refused(run_main(*args, "--calibrate", str(lab["text"])), lab, before)


def test_summarise_never_writes_over_a_document(lab):
    before = {k: p.read_bytes() for k, p in lab.items()}
    ran = run_main("summarise", str(lab["text"]), "--out", str(lab["text"]), "--force")
    refused(ran, lab, before)


def test_shrink_never_writes_over_its_inputs(lab, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    os.link(lab["text"], work / "M-Q4_K_M.gguf")  # where the first candidate would go
    before = {k: p.read_bytes() for k, p in lab.items()}
    ran = run_main(
        "shrink", str(lab["model"]), "--text", str(lab["text"]), "--types", "Q4_K_M",
        "--ctx", "64", "--work", str(work),
    )  # fmt: skip
    refused(ran, lab, before)


# -- 11: matrices that would ruin a model, and files that are not files -----------------

RUINOUS = {
    "in_sum2 all negative": (np.full(256, -3.0), [64.0], "negative sums"),
    "in_sum2 all zero": (np.zeros(256), [64.0], "is zero"),
    "in_sum2 one negative": (np.r_[np.ones(255), -1.0], [64.0], "negative sums"),
    "counts zero": (np.ones(256), [0.0], "no rows were seen"),
    "counts negative": (np.ones(256), [-64.0], "not counts of rows"),
    "counts NaN": (np.ones(256), [np.nan], "not counts of rows"),
    "counts inf": (np.ones(256), [np.inf], "not counts of rows"),
    "in_sum2 NaN": (np.r_[np.ones(255), np.nan], [64.0], "non-finite"),
}


@pytest.mark.parametrize("case", list(RUINOUS))
def test_a_matrix_that_would_ruin_a_model_is_refused(case, lab, tmp_path):
    sums, counts, said = RUINOUS[case]
    bad = write_matrix(tmp_path / "bad.gguf", sums, counts)
    with pytest.raises(InputError, match=said):
        imatrix.load(bad)
    out = tmp_path / "out.gguf"
    ran = run_main(
        "quantize", str(lab["model"]), str(out), "--type", "Q4_K_M", "--imatrix", str(bad)
    )
    assert ran.returncode == 1 and said in ran.stderr and ran.stderr.count("\n") == 1
    assert not out.exists()


def test_every_expert_but_one_may_have_seen_nothing(tmp_path):
    experts = np.r_[np.ones(4), np.zeros(4)]  # the second expert: no token reached it
    m = imatrix.load(write_matrix(tmp_path / "moe.gguf", experts.reshape(2, 4), [[3.0], [0.0]]))
    assert m.counts["blk.0.attn_q.weight"].tolist() == [3, 0]


def test_a_legacy_matrix_with_a_negative_count_is_refused(tmp_path):
    import struct

    name = b"blk.0.attn_q.weight"
    blob = struct.pack("<i", 1) + struct.pack("<i", len(name)) + name
    blob += struct.pack("<ii", -3, 4) + np.ones(4, "<f4").tobytes()
    (tmp_path / "m.dat").write_bytes(blob)
    with pytest.raises(InputError, match="negative call count"):
        imatrix.load(tmp_path / "m.dat")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "kind,said",
    [("fifo", "a pipe"), ("device", "a device"), ("loop", "symlink loop"), ("folder", "a folder")],
)
def test_reading_a_matrix_says_what_the_path_is(kind, said, tmp_path):
    path = tmp_path / "m.gguf"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path.symlink_to("/dev/zero")
    elif kind == "loop":
        path.symlink_to(path)
    else:
        path.mkdir()
    with pytest.raises(InputError, match=said):
        imatrix.load(path)
    ran = run_main("quantize", str(tmp_path / "x.gguf"), str(tmp_path / "y.gguf"),
                   "--type", "Q4_K_M", "--imatrix", str(path))  # fmt: skip
    assert ran.returncode == 1 and said in ran.stderr and "not found" not in ran.stderr


# -- 10: shrink's work folder is believed only where it checks out -----------------------

KEY = {"source": "a" * 64, "text": "b" * 64, "n_ctx": 64, "chunks": None, "recipe": "mixed"}


def manifest(work: Path, body):
    from edgechat.lab.workfolder import Manifest

    work.mkdir(exist_ok=True)
    (work / "shrink.json").write_text(body if isinstance(body, str) else json.dumps(body))
    said: list[str] = []
    return Manifest(work, KEY, said.append), said


def entry(**changes) -> dict:
    figures = {"kl_mean": 0.01, "kl_p99": 0.1, "ppl_ratio": 1.01, "top1": 0.95}
    base = {"file": "c.gguf", "type": "Q4_K_M", "imatrix": False, "size": 4, "sha256": "0" * 64}
    return base | {"figures": figures, "tps": 10.0} | changes


DAMAGED = {
    "not JSON": "{shrink",
    "200k brackets": "[" * 200_000 + "]" * 200_000,
    "a list": [1, 2],
    "done a list": {"key": KEY, "done": ["Q4_K_M"]},
    "an entry a string": {"key": KEY, "done": {"Q4_K_M": "c.gguf"}},
    "unknown figure keys": {"key": KEY, "done": {"Q4_K_M": entry(figures={"kl": 1})}},
    "figures not numbers": {"key": KEY, "done": {"Q4_K_M": entry(figures={
        "kl_mean": "low", "kl_p99": None, "ppl_ratio": 1.0, "top1": 1.0})}},
    "an absolute path": {"key": KEY, "done": {"Q4_K_M": entry(file="/etc/passwd")}},
    "a path out": {"key": KEY, "done": {"Q4_K_M": entry(file="../x.gguf")}},
    "size a string": {"key": KEY, "done": {"Q4_K_M": entry(size="4")}},
    "no hash": {"key": KEY, "done": {"Q4_K_M": entry(sha256=None)}},
    "imatrix a path": {"key": KEY, "imatrix": "/tmp/m.gguf", "imatrix_sha256": "0" * 64},
}  # fmt: skip


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_manifest_is_one_line_and_starts_afresh(case, tmp_path):
    m, said = manifest(tmp_path / "work", DAMAGED[case])
    assert m.done == {} and m.imatrix is None and m.matrix_file() is None
    assert len(said) == 1 and "\n" not in said[0]


@pytest.mark.timeout(30)
def test_a_manifest_that_is_a_pipe_does_not_hang(tmp_path):
    from edgechat.lab.workfolder import Manifest

    work = tmp_path / "work"
    work.mkdir()
    os.mkfifo(work / "shrink.json")
    said: list[str] = []
    assert Manifest(work, KEY, said.append).done == {} and "a pipe" in said[0]


def test_a_candidate_is_believed_only_while_it_is_as_it_was_made(tmp_path):
    from edgechat.lab.workfolder import Manifest

    work = tmp_path / "work"
    work.mkdir()
    said: list[str] = []
    m = Manifest(work, KEY, said.append)
    (work / "c.gguf").write_bytes(b"GGUF-made")
    m.record("Q4_K_M", {"file": "c.gguf", "type": "Q4_K_M", "imatrix": False})
    again = Manifest(work, KEY, said.append)
    assert again.made("Q4_K_M") is not None and said == []
    (work / "c.gguf").write_bytes(b"GGUF-bad!")  # same size, other bytes
    again = Manifest(work, KEY, said.append)
    assert again.made("Q4_K_M") is None and "changed since it was made" in said[0]
    outside = tmp_path / "outside.gguf"
    outside.write_bytes(b"GGUF-made")  # the same bytes, but a link out of the folder
    (work / "c.gguf").unlink()
    (work / "c.gguf").symlink_to(outside)
    assert Manifest(work, KEY, said.append).made("Q4_K_M") is None
    assert outside.read_bytes() == b"GGUF-made"


@pytest.mark.model
@pytest.mark.subprocess  # candidates are timed in a child process
def test_a_planted_manifest_moves_nothing_in_and_damage_is_made_again(tiny, lab, tmp_path, capsys):
    work, outside = tmp_path / "work", tmp_path / "precious.gguf"
    anything = "kld=off,p99=off,ppl=off,top1=off"  # a random model: any candidate is kept
    args = ["shrink", str(tiny), "--text", str(lab["text"]), "--types", "Q4_K_M", "--ctx", "64",
            "--threads", "1", "--work", str(work), "--budget", anything]  # fmt: skip
    assert run_main(*args).returncode == 0
    data = json.loads((work / "shrink.json").read_text())
    plain, with_matrix = data["done"]["Q4_K_M"], data["done"]["Q4_K_M+imatrix"]
    outside.write_bytes((work / plain["file"]).read_bytes())  # right size, right hash
    plain["file"] = str(outside)  # planted: a file outside the folder
    (work / data["imatrix"]).write_bytes(b"GGUF" + b"\0" * 60)  # a damaged matrix
    damaged = work / with_matrix["file"]
    damaged.write_bytes(damaged.read_bytes()[:-8] + b"\0" * 8)  # and a damaged candidate
    (work / "shrink.json").write_text(json.dumps(data))
    ran = run_main(*args, "--keep", "mine", "--json")
    assert ran.returncode == 0, ran.stderr
    assert "Traceback" not in ran.stderr
    assert "the entry of Q4_K_M is damaged" in ran.stderr
    assert f"{damaged.name} in {work} changed since it was made: made again" in ran.stderr
    assert f"imatrix.gguf in {work} changed since it was made: made again" in ran.stderr
    kept = json.loads(ran.stdout)["kept"]
    assert Path(kept["path"]).parent != outside.parent and outside.exists()
    assert Path(kept["path"]).exists()


# -- issue 31, 1: quantize stops on Ctrl-C and leaves nothing half-written ----------------


@pytest.fixture(scope="module")
def f16(starter_path, tmp_path_factory) -> Path:
    from edgechat.lab.quantize import dequantize

    return dequantize(starter_path, tmp_path_factory.mktemp("f16") / "smol-f16.gguf")


def _quantize_then(sig, f16: Path, out: Path) -> subprocess.CompletedProcess:
    """Quantise, and once the output is being written send ``sig`` (or call it)."""
    child = subprocess.Popen(
        [sys.executable, "-m", "edgechat", "quantize", str(f16), str(out), "--type", "IQ4_XS",
         "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(out.parent.glob(f".{out.name}.*.partial")):  # it is writing now
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()
        time.sleep(0.05)
    time.sleep(0.3)
    sig(child) if callable(sig) else child.send_signal(sig)
    stdout, stderr = child.communicate(timeout=60)
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)


@pytest.mark.model
@pytest.mark.subprocess
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_quantize_stops_at_once_and_leaves_nothing(sig, f16, tmp_path):
    out = tmp_path / "out.gguf"
    done = _quantize_then(sig, f16, out)
    assert done.returncode == 130, done.stderr
    assert "interrupted" in done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # no output, no partial file


@pytest.mark.model
@pytest.mark.subprocess
def test_a_killed_quantize_leaves_no_process_running(f16, tmp_path):
    """Killed outright (SIGKILL, the OOM killer), edgechat cannot end its child: the child,
    in a session of its own, stops at its next tensor once nobody hears it."""
    psutil = pytest.importorskip("psutil")
    out = tmp_path / "out.gguf"
    seen: list = []

    def kill(child) -> None:
        seen.extend(psutil.Process(child.pid).children(recursive=True))
        child.kill()

    _quantize_then(kill, f16, out)
    assert seen  # the quantiser's process
    gone, alive = psutil.wait_procs(seen, timeout=10)
    assert not alive, alive


@pytest.mark.model
@pytest.mark.subprocess  # quantising runs in a child process
def test_partial_files_a_killed_run_left_are_removed(tiny, tmp_path):
    from edgechat.lab.quantize import quantize

    dead = tmp_path / ".q.gguf.999999999.partial"  # no such process
    alive = tmp_path / f".q.gguf.{os.getppid()}.partial"  # one still writing
    dead.write_bytes(b"GGUF" * 1000)
    alive.write_bytes(b"GGUF" * 1000)
    quantize(tiny, tmp_path / "q.gguf", "Q8_0")
    assert not dead.exists() and alive.exists()


# -- issue 31, 8 and 14: calibrate and quantize say what is true ---------------------------


@pytest.mark.model
@pytest.mark.subprocess
def test_calibrating_a_quantised_model_warns_and_suggests_what_quantize_accepts(
    starter_path, lab, tmp_path
):
    matrix = tmp_path / "m.imatrix.gguf"
    ran = run_main("calibrate", str(starter_path), "--text", str(lab["text"]), "--out",
                   str(matrix), "--ctx", "64", "--chunks", "1")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert "is Q4_1: a matrix measured on a quantised model" in ran.stderr
    line = next(x for x in ran.stdout.splitlines() if x.startswith("use it: edgechat quantize"))
    assert "--allow-requantize" in line
    words = line.removeprefix("use it: edgechat ").split()
    words[1] = str(starter_path)
    words[2] = str(tmp_path / "out.gguf")
    done = run_main(*words)
    assert done.returncode == 0, done.stderr  # the line it suggested is accepted


def test_a_missing_text_is_said_before_the_output(lab, tmp_path):
    (tmp_path / "M.imatrix.gguf").write_bytes(b"x")  # the default output exists already
    ran = run_main("calibrate", str(lab["model"]), "--text", str(tmp_path / "missing.txt"))
    assert ran.returncode == 1 and "missing.txt" in ran.stderr and "exists" not in ran.stderr
    ran = run_main("quantize", str(lab["model"]), str(tmp_path / "M.imatrix.gguf"),
                   "--type", "Q4_K_M", "--calibrate", str(tmp_path / "missing.txt"))  # fmt: skip
    assert ran.returncode == 1 and "missing.txt" in ran.stderr and "exists" not in ran.stderr


@pytest.mark.model
@pytest.mark.subprocess  # quantising runs in a child process
def test_going_up_to_f16_is_allowed_and_said_truly(starter_path, tmp_path):
    from edgechat.lab.quantize import quantize

    said: list[str] = []
    out = quantize(starter_path, tmp_path / "smol-f16.gguf", "F16", warn=said.append)
    assert out.type == "F16" and out.size_out > out.size_in
    assert said and "keeps its quality" in said[0] and "loses" not in said[0]
    with pytest.raises(EdgechatError, match="adds its own rounding"):
        quantize(starter_path, tmp_path / "q8.gguf", "Q8_0")
