"""Importance matrices: `calibrate` collects llama-imatrix's statistics through llama.cpp's
graph callback, writes and reads llama.cpp's files, and `quantize` hands the matrix to
llama.cpp; on the real starter model (an F16 made from it) with tiny chunks."""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.cli import run_cli
from support.tiny_llama import write_tiny_llama

from edgechat.errors import EdgechatError
from edgechat.lab import imatrix
from edgechat.lab.calibrate import calibrate
from edgechat.lab.quantize import quantize
from edgechat.llama.engine import Engine
from edgechat.planning.plan import RunPlan

LICENCE = Path("/usr/share/common-licenses/GPL-3")
CTX, CHUNKS = 64, 3
ONE = ["--threads", "1"]  # a loaded 2-core machine thrashes on the callback's many syncs


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("calib")


@pytest.fixture(scope="module")
def tiny(folder) -> Path:
    """A two-layer F32 llama with random weights: to quantise, and to check by hand."""
    return write_tiny_llama(folder / "tiny-f32.gguf")


@pytest.fixture(scope="module")
def text(folder) -> Path:
    path = folder / "text.txt"
    if LICENCE.exists():
        path.write_text(LICENCE.read_text()[:12000])
    else:
        path.write_text(
            " ".join(f"Clause {i}: the licensee may copy, modify and share." for i in range(300))
        )
    return path


@pytest.fixture(scope="module")
def matrix(starter_path, text):
    """The real starter's matrix, with progress recorded."""
    seen = []
    m = calibrate(
        RunPlan(starter_path, n_ctx=CTX, n_threads=1),
        [text],
        ctx=CTX,
        chunks=CHUNKS,
        progress=lambda i, n, left: seen.append((i, n, left)),
    )
    assert seen[0] == (0, CHUNKS, None) and seen[-1] == (CHUNKS, CHUNKS, 0.0)
    assert all(left is not None and left >= 0 for _, _, left in seen[1:])
    return m


@pytest.fixture(scope="module")
def tiny_matrix(tiny, text):
    return calibrate(RunPlan(tiny, n_ctx=CTX, n_threads=1), [text], ctx=CTX, chunks=CHUNKS)


@pytest.mark.model
def test_every_weight_of_every_layer_counts_every_token(matrix, starter_path, text):
    from edgechat.facts.gguf import inspect_file

    weights = {
        t.name: t.shape
        for t in inspect_file(starter_path).tensors
        if t.name.startswith("blk.") and len(t.shape) == 2
    }
    assert set(matrix.names) == set(weights)  # the last layer too: every row was computed
    for name in matrix.names:
        assert matrix.counts[name].tolist() == [CHUNKS * CTX]
        assert matrix.in_sum2[name].shape == (weights[name][0],)
        assert (matrix.in_sum2[name] > 0).all()
    assert matrix.chunk_count == CHUNKS and matrix.chunk_size == CTX
    assert matrix.datasets == (str(text),)


def test_first_layer_statistics_are_the_normalised_embeddings(tiny_matrix, tiny, text):
    """Checked by hand: blk.0.attn_q's input is the token embedding, RMS-normalised and
    scaled by attn_norm, so its column sums of squares follow from the weights alone
    (each chunk starting with BOS, as the tiny model asks)."""
    import numpy as np
    from gguf import GGUFReader

    reader = GGUFReader(tiny)
    tensors = {t.name: np.asarray(t.data, dtype=np.float64) for t in reader.tensors}
    eps = float(reader.fields["llama.attention.layer_norm_rms_epsilon"].contents())
    with Engine(RunPlan(tiny, n_ctx=CTX)) as engine:
        tokens = engine.tokenize(text.read_text(), add_special=True)[: CHUNKS * CTX]
        bos = engine._lc.llama_vocab_bos(engine._vocab)
    tokens = np.array(tokens).reshape(CHUNKS, CTX)
    tokens[:, 0] = bos
    emb = tensors["token_embd.weight"][tokens.reshape(-1)]
    norm = emb / np.sqrt((emb**2).mean(axis=1, keepdims=True) + eps)
    x = norm * tensors["blk.0.attn_norm.weight"]
    expected = (x**2).sum(axis=0)
    for name in ("blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight"):
        np.testing.assert_allclose(tiny_matrix.in_sum2[name], expected, rtol=1e-4)
    assert tiny_matrix.counts["blk.1.ffn_down.weight"].tolist() == [CHUNKS * CTX]


@pytest.mark.model
def test_the_file_is_llama_imatrix_s_format(matrix, folder):
    import numpy as np
    from gguf import GGUFReader

    path = imatrix.save(matrix, folder / "m.imatrix.gguf")
    reader = GGUFReader(path)
    assert [k for k in reader.fields if not k.startswith("GGUF.")] == [
        "general.type",
        "imatrix.datasets",
        "imatrix.chunk_count",
        "imatrix.chunk_size",
    ]
    assert reader.fields["general.type"].contents() == "imatrix"
    assert reader.fields["imatrix.datasets"].contents() == list(matrix.datasets)
    assert reader.fields["imatrix.chunk_count"].contents() == CHUNKS
    assert reader.fields["imatrix.chunk_size"].contents() == CTX
    assert [t.name for t in reader.tensors] == [
        f"{n}.{part}" for n in sorted(matrix.names) for part in ("in_sum2", "counts")
    ]
    tensors = {t.name: t for t in reader.tensors}
    q = tensors["blk.0.attn_q.weight.in_sum2"]
    assert q.tensor_type.name == "F32" and q.shape.tolist() == [576]
    counts = tensors["blk.0.attn_q.weight.counts"]
    assert counts.tensor_type.name == "F32" and counts.shape.tolist() == [1]
    assert counts.data.tolist() == [CHUNKS * CTX]
    np.testing.assert_array_equal(q.data, matrix.in_sum2["blk.0.attn_q.weight"])
    back = imatrix.load(path)
    assert back.names == matrix.names and back.datasets == matrix.datasets
    assert back.path == str(path) and back.chunk_count == CHUNKS
    assert not list(folder.glob(".*partial"))


def test_micro_batches_change_nothing(tiny_matrix, tiny, text):
    """A chunk evaluated in two micro-batches of 32 gives the same statistics. (Flash
    attention off: llama.cpp's CPU kernel for it sums in F16 and itself moves with the
    micro-batch size at this tiny scale; what is checked here is the accumulation.)"""
    import numpy as np

    whole, halves = (
        calibrate(
            RunPlan(tiny, n_ctx=CTX, n_threads=1, n_ubatch=ub, flash_attn="off"),
            [text],
            ctx=CTX,
            chunks=CHUNKS,
        )
        for ub in (CTX, CTX // 2)
    )
    assert halves.names == whole.names == tiny_matrix.names
    for name in halves.names:
        assert halves.counts[name].tolist() == whole.counts[name].tolist()
        np.testing.assert_allclose(halves.in_sum2[name], whole.in_sum2[name], rtol=1e-5)


@pytest.mark.subprocess  # quantising runs in a child process
def test_experts_each_count_the_tokens_routed_to_them(folder, text):
    """A mixture of experts (4, two per token): every expert has its own sums and count,
    and together they hold each token twice; the router sees each token once, on the
    same input as the experts' gate, so the experts' sums are twice the router's."""
    import numpy as np
    from gguf import GGUFReader

    moe = write_tiny_llama(folder / "tiny-moe.gguf", n_expert=4)
    m = calibrate(RunPlan(moe, n_ctx=CTX, n_threads=1), [text], ctx=CTX, chunks=CHUNKS)
    tokens = CHUNKS * CTX
    for i in (0, 1):
        gate, up = (f"blk.{i}.ffn_{p}_exps.weight" for p in ("gate", "up"))
        assert len(m.counts[gate]) == 4 and m.counts[gate].sum() == 2 * tokens
        assert m.counts[f"blk.{i}.ffn_down_exps.weight"].tolist() == m.counts[gate].tolist()
        np.testing.assert_array_equal(m.in_sum2[gate], m.in_sum2[up])
        experts = m.in_sum2[gate].reshape(4, -1).astype(np.float64).sum(axis=0)
        router = m.in_sum2[f"blk.{i}.ffn_gate_inp.weight"]
        np.testing.assert_allclose(experts, 2 * router, rtol=1e-5)
        assert m.counts[f"blk.{i}.ffn_gate_inp.weight"].tolist() == [tokens]
    path = imatrix.save(m, folder / "moe.imatrix.gguf")
    saved = {t.name: t for t in GGUFReader(path).tensors}
    assert saved["blk.0.ffn_down_exps.weight.in_sum2"].shape.tolist() == [512, 4]
    assert saved["blk.0.ffn_down_exps.weight.counts"].shape.tolist() == [1, 4]
    back = imatrix.load(path)
    for name in m.names:
        np.testing.assert_array_equal(back.counts[name], m.counts[name])
    assert quantize(moe, folder / "moe-q4.gguf", "Q4_K_M", imatrix=back).bits_per_weight < 6


def test_llama_imatrix_files_are_read(tmp_path):
    """Both of llama.cpp's formats, written here as llama-imatrix writes them; one entry
    has 2 experts, one expert no tokens."""
    import numpy as np
    from gguf import GGUFValueType, GGUFWriter

    dense = np.arange(1, 9, dtype=np.float32)
    experts = np.arange(1, 9, dtype=np.float32).reshape(2, 4)
    gguf_path = tmp_path / "llama.gguf"
    w = GGUFWriter(gguf_path, "")
    w.add_type("imatrix")
    w.add_key_value("imatrix.datasets", ["a.txt"], GGUFValueType.ARRAY, GGUFValueType.STRING)
    w.add_uint32("imatrix.chunk_count", 2)
    w.add_uint32("imatrix.chunk_size", 512)
    w.add_tensor("blk.0.ffn_down_exps.weight.in_sum2", experts)
    w.add_tensor("blk.0.ffn_down_exps.weight.counts", np.array([[4.0], [0.0]], np.float32))
    w.add_tensor("blk.0.attn_q.weight.in_sum2", dense)
    w.add_tensor("blk.0.attn_q.weight.counts", np.array([2.0], np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    m = imatrix.load(gguf_path)
    assert m.names == ("blk.0.attn_q.weight", "blk.0.ffn_down_exps.weight")
    assert (m.datasets, m.chunk_count, m.chunk_size) == (("a.txt",), 2, 512)
    assert m.counts["blk.0.ffn_down_exps.weight"].tolist() == [4, 0]
    means = m.mean_squares()
    np.testing.assert_array_equal(means["blk.0.attn_q.weight"], dense / 2)
    np.testing.assert_array_equal(
        means["blk.0.ffn_down_exps.weight"], np.concatenate([experts[0] / 4, np.ones(4)])
    )

    # Legacy .dat: n_entries; per entry name, ncall, nval, mean * ncall; chunks, dataset.
    dat = tmp_path / "llama.dat"
    blob = struct.pack("<i", 1)
    name = b"blk.0.attn_q.weight"
    blob += struct.pack("<i", len(name)) + name + struct.pack("<ii", 3, dense.size)
    blob += (dense / 2 * 3).astype("<f4").tobytes()
    blob += struct.pack("<i", 3) + struct.pack("<i", 5) + b"b.txt"
    dat.write_bytes(blob)
    legacy = imatrix.load(dat)
    assert legacy.names == ("blk.0.attn_q.weight",) and legacy.datasets == ("b.txt",)
    assert legacy.chunk_count == 3
    np.testing.assert_allclose(legacy.mean_squares()["blk.0.attn_q.weight"], dense / 2)
    dat.write_bytes(blob[:30])  # cut inside the values
    with pytest.raises(EdgechatError, match="not a readable importance matrix"):
        imatrix.load(dat)


@pytest.mark.subprocess  # quantising runs in a child process
def test_a_matrix_changes_the_quant(tiny_matrix, tiny, folder):
    import numpy as np
    from gguf import GGUFReader

    plain = quantize(tiny, folder / "plain.gguf", "Q4_K_M", "uniform")
    weighed = quantize(tiny, folder / "weighed.gguf", "Q4_K_M", "uniform", imatrix=tiny_matrix)
    a = {t.name: t for t in GGUFReader(plain.path).tensors}
    b = GGUFReader(weighed.path)
    changed = {t.name for t in b.tensors if not np.array_equal(t.data, a[t.name].data)}
    assert changed == set(tiny_matrix.names)  # every weight it has data for, no other
    assert b.fields["quantize.imatrix.entries_count"].contents() == len(tiny_matrix)
    assert b.fields["quantize.imatrix.chunks_count"].contents() == CHUNKS
    # The mixed recipe takes it too, and every low-bit type.
    mixed = quantize(tiny, folder / "mixed.gguf", "Q4_K_M", "mixed", imatrix=tiny_matrix)
    assert mixed.bits_per_weight > weighed.bits_per_weight
    warned = []
    low = quantize(
        tiny, folder / "iq2.gguf", "IQ2_XS", "uniform", imatrix=tiny_matrix, warn=warned.append
    )
    assert low.bits_per_weight < 3 and any("token_embd.weight is Q2_K" in w for w in warned)
    with pytest.raises(EdgechatError, match="exists; pass --force"):
        quantize(tiny, folder / "mixed.gguf", "Q4_K_M", "mixed", imatrix=tiny_matrix)
    quantize(tiny, folder / "mixed.gguf", "Q4_0", imatrix=tiny_matrix, force=True)
    with pytest.raises(EdgechatError, match="does not exist"):
        quantize(tiny, folder / "nowhere" / "q.gguf", "Q4_K_M")
    assert not (folder / "nowhere").exists() and not list(folder.glob(".*partial"))


def test_low_bit_types_need_a_matrix(tiny, tmp_path):
    with pytest.raises(EdgechatError, match="IQ2_XS needs an importance matrix.*calibrate"):
        quantize(tiny, tmp_path / "iq2.gguf", "IQ2_XS")
    assert not list(tmp_path.iterdir())


@pytest.mark.model
def test_a_matrix_of_another_model_is_refused(matrix, tiny, tmp_path):
    import numpy as np

    with pytest.raises(EdgechatError, match="576 values for blk.0.attn_.*another model"):
        quantize(tiny, tmp_path / "q.gguf", "Q4_K_M", imatrix=matrix)
    stranger = imatrix.ImportanceMatrix(
        {"blk.0.mixer.weight": np.ones(8, np.float32)}, {"blk.0.mixer.weight": np.array([1])}
    )
    with pytest.raises(EdgechatError, match="names none of"):
        quantize(tiny, tmp_path / "q.gguf", "Q4_K_M", imatrix=stranger)
    assert not list(tmp_path.iterdir())


def test_ctrl_c_in_progress_stops_calibration(tiny, text):
    calls = []

    def interrupt(i, n, left):
        calls.append(i)
        if i == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        calibrate(RunPlan(tiny, n_ctx=CTX, n_threads=1), [text], ctx=CTX, progress=interrupt)
    assert calls == [0, 1]


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """The real command line, in this process (no interpreter start per call)."""
    from edgechat.cli import main

    try:
        code = main(list(args))
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.subprocess
def test_calibrate_and_quantize_commands(tiny, text, tmp_path, capsys):
    out = tmp_path / "tiny.imatrix.gguf"
    common = ["--ctx", str(CTX), "--chunks", "2", *ONE]
    made = run_cli(
        "calibrate", str(tiny), "--text", str(text), "--out", str(out), *common, "--json"
    )
    assert made.returncode == 0, made.stderr
    result = json.loads(made.stdout)
    assert result["path"] == str(out) and result["chunks"] == 2 and result["tensors"] == 14
    assert "chunk 2/2" in made.stderr  # progress on stderr
    code, _, err = cli(capsys, "calibrate", str(tiny), "--text", str(text), "--out", str(out))
    assert code == 1 and "exists; pass --force" in err
    code, _, err = cli(
        capsys, "quantize", str(tiny), str(tmp_path / "q.gguf"), "--type", "IQ4_NL", "--imatrix"
    )
    assert code == 2  # --imatrix needs its FILE
    code, _, err = cli(
        capsys,
        "quantize",
        str(tiny),
        str(tmp_path / "q.gguf"),
        "--type",
        "IQ4_NL",
        "--imatrix",
        str(out),
    )
    assert code == 0, err
    code, stdout, err = cli(
        capsys,
        "quantize",
        str(tiny),
        str(tmp_path / "q2.gguf"),
        "--type",
        "Q4_K_M",
        "--calibrate",
        str(text),
        *common,
        "--json",
    )
    assert code == 0, err
    assert json.loads(stdout)["imatrix"] == "calibrated" and "calibrating" in err
    code, _, err = cli(capsys, "quantize", str(tiny), str(tmp_path / "q3.gguf"), "--type", "IQ2_XS")
    assert code == 1 and "edgechat calibrate" in err and len(err.strip().splitlines()) == 1
    code, _, _ = cli(
        capsys,
        "quantize",
        str(tiny),
        "x.gguf",
        "--type",
        "Q4_0",
        "--imatrix",
        "m",
        "--calibrate",
        "t",
    )
    assert code == 2
    # With no --out, the matrix lands beside the model file that was named.
    code, stdout, err = cli(capsys, "calibrate", str(tiny), "--text", str(text), *common, "--json")
    assert code == 0, err
    beside = tiny.with_name("tiny-f32.imatrix.gguf")
    assert json.loads(stdout)["path"] == str(beside)
    beside.unlink()


@pytest.mark.model
def test_bad_input_is_one_line(tiny, text, tmp_path, gemma_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("Too short to calibrate on.")
    binary = tmp_path / "blob.txt"
    binary.write_bytes(bytes(range(256)) * 64)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    junk = tmp_path / "junk.imatrix.gguf"
    junk.write_bytes(b"GGUF" + bytes(range(200)))
    cal = ["calibrate", str(tiny), "--ctx", str(CTX), *ONE, "--text"]
    cases = [
        ([*cal, str(short)], "shorter than one chunk"),
        ([*cal, str(binary)], "binary"),
        ([*cal, str(empty)], "empty"),
        ([*cal, str(tmp_path / "none.txt")], "no such file"),
        ([*cal, str(text), "--out", str(tmp_path / "no" / "m.gguf")], "does not exist"),
        (
            ["quantize", str(tiny), str(tmp_path / "q.gguf"), "--type", "Q4_0", "--imatrix"]
            + [str(junk)],
            "not a readable importance matrix",
        ),
    ]
    for args, words in cases:
        code, _, err = cli(capsys, *args)
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and words in lines[0], (args, lines)
    assert {p.name for p in tmp_path.iterdir()} == {"short.txt", "blob.txt", "empty.txt", junk.name}
    # A base model is fine to calibrate (it is not a chat): Gemma 3 270M base, as shipped.
    out = tmp_path / "gemma.imatrix.gguf"
    code, stdout, err = cli(
        capsys,
        "calibrate",
        str(gemma_path),
        "--text",
        str(text),
        "--out",
        str(out),
        "--ctx",
        "128",
        "--chunks",
        "1",
        *ONE,
        "--json",
    )
    assert code == 0, err
    assert json.loads(stdout)["tensors"] == 18 * 7 and out.exists()


@pytest.mark.model
@pytest.mark.subprocess
def test_sigint_leaves_no_file(starter_path, text, tmp_path):
    out = tmp_path / "m.imatrix.gguf"
    child = subprocess.Popen(
        [sys.executable, "-m", "edgechat", "calibrate", str(starter_path), "--text", str(text)]
        + ["--out", str(out), "--ctx", str(CTX), *ONE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = child.stderr.readline()  # the starter is Q4_1: a warning says so first
    assert "quantised model" in line, line
    line = child.stderr.readline()  # "calibrating: chunk 0/N": the model runs now
    assert "calibrating: chunk 0/" in line, line
    time.sleep(0.3)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
