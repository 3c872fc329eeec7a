"""GGUF header facts, from local files and through HTTP range reads."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from support.cli import run_main
from support.rangeserver import RangeServer

from edgechat.facts.gguf import GGUFError, inspect, inspect_file, inspect_url


def test_starter_model_facts(starter_path):
    f = inspect_file(starter_path)
    assert (f.architecture, f.file_type, f.version) == ("llama", "Q4_1", 3)
    assert f.n_params == 134_515_008  # SmolLM2-135M
    assert (f.n_layers, f.n_embd, f.n_head, f.head_dim_k) == (30, 576, 9, 64)
    assert set(f.n_head_kv) == {3}  # grouped-query attention
    assert f.context_length == 8192 and f.n_vocab == 49152
    assert f.sliding_window is None and not any(f.swa_layers)
    assert f.chat_template is True
    assert set(f.quant_mix) == {"Q4_1", "Q8_0", "F32"}
    assert 5.5 < f.bits_per_weight < 6.0
    assert f.expected_size == f.file_size == starter_path.stat().st_size


def test_gemma_sliding_window_layers(gemma_path):
    f = inspect_file(gemma_path)
    assert (f.architecture, f.file_type) == ("gemma3", "Q4_K_M")
    assert f.n_vocab == 262_144 and f.sliding_window == 512
    # llama.cpp's Gemma 3 pattern: five local layers, then one global.
    assert f.swa_layers == tuple(i % 6 != 5 for i in range(18))
    assert {"Q4_K", "Q6_K"} <= set(f.quant_mix)


def test_synthetic_model_written_with_the_gguf_package(tmp_path):
    import gguf

    path = tmp_path / "tiny.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(2)
    w.add_embedding_length(8)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_context_length(128)
    w.add_sliding_window(16)
    w.add_tensor("token_embd.weight", np.zeros((10, 8), dtype=np.float32))
    w.add_tensor("blk.0.attn_q.weight", np.zeros((8, 8), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(GGUFError, match="no tokenizer vocabulary"):
        inspect_file(path)  # llama.cpp could not run it: refused where it would load
    f = inspect_file(path, strict=False)  # its structure alone is sound
    assert f.n_params == 80 + 64
    assert f.tensor_bytes == 80 * 4 + 64 * 2
    assert f.quant_mix["F16"] == {"tensors": 1, "params": 64, "bytes": 128}
    assert f.n_head_kv == (1, 1) and f.head_dim_k == 4
    assert f.swa_layers == (True, True)  # a window, no pattern: every layer
    assert [t.layer for t in f.tensors] == [None, 0]


def test_truncated_header_and_truncated_weights(tmp_path, starter_path):
    data = starter_path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:100_000])
    with pytest.raises(GGUFError, match="truncated"):
        inspect_file(cut)
    cut.write_bytes(data[: len(data) - 1])
    with pytest.raises(GGUFError, match=f"is truncated: its header says it is {len(data):,}"):
        inspect_file(cut)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "truncated"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "not a GGUF model file"),
        (b"GGUF" + struct.pack("<I", 1) + b"\0" * 16, "version 1"),
        (b"GGUF" + struct.pack("<IQQ", 3, 1, 2**40), "corrupt"),
    ],
)
def test_bad_files(tmp_path, content, match):
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(GGUFError, match=match):
        inspect_file(path)


def test_remote_header_through_range_reads(gemma_path):
    with RangeServer({"/gemma.gguf": gemma_path}) as server:
        f = inspect_url(server.url + "/gemma.gguf")
        local = inspect_file(gemma_path)
        assert f.as_dict() | {"source": ""} == local.as_dict() | {"source": ""}
        assert all(r is not None for _, r in server.requests), "only ranged requests"
        header_bytes = local.expected_size - local.tensor_bytes
        fetched = len(server.requests) * (1 << 20)
        assert fetched < header_bytes + (2 << 20) < local.file_size / 10


def test_server_without_range_support_is_refused(gemma_path):
    server = RangeServer({"/gemma.gguf": gemma_path}, ranges=False)
    with server, pytest.raises(GGUFError, match="does not support range requests"):
        inspect_url(server.url + "/gemma.gguf")


def test_remote_errors():
    with RangeServer({}) as server, pytest.raises(GGUFError, match="404"):
        inspect(server.url + "/missing.gguf")
    with pytest.raises(GGUFError, match="cannot reach"):
        inspect("http://127.0.0.1:9/none.gguf")


@pytest.mark.subprocess  # llama.cpp is asked in a child whether it loads the file
def test_inspect_command(starter_path, tmp_path):
    result = run_main("inspect", str(starter_path), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["architecture"] == "llama" and data["n_params"] == 134_515_008
    text = run_main("inspect", str(starter_path))
    assert "Q4_1" in text.stdout and "grouped" not in text.stderr
    bad = tmp_path / "x.gguf"
    bad.write_text("hello")
    err = run_main("inspect", str(bad))
    assert err.returncode == 1 and "not a GGUF model file" in err.stderr
