"""The kernel check's model (``llama/kernelcheck.py``): a small random llama with one
layer per weight type llama.cpp's extra CPU buffers take, written with gguf and
quantised by ggml itself, so every extra kernel is run on the types it handles."""

from __future__ import annotations

import ctypes

# ggml_type values and the weight types extra CPU buffers take (AMX's list is the longest).
TYPES = {
    "F16": 1,
    "Q4_0": 2,
    "Q4_1": 3,
    "Q8_0": 8,
    "Q4_K": 12,
    "Q5_K": 13,
    "Q6_K": 14,
    "IQ4_XS": 23,
}
N_EMBD, N_FF, N_HEAD, N_HEAD_KV = 512, 1536, 8, 4


def _quantize(lc, data, type_name: str):
    """``data`` (rows x cols, float32) in ggml's ``type_name``, as raw bytes for gguf."""
    import numpy as np

    base = _base(lc)
    qtype = TYPES[type_name]
    rows, cols = data.shape
    size = base.ggml_row_size(qtype, cols) * rows
    out = np.empty(size, dtype=np.uint8)
    src = np.ascontiguousarray(data, dtype=np.float32)
    base.ggml_quantize_chunk(qtype, src.ctypes.data, out.ctypes.data, 0, rows, cols, None)
    return out


def _base(lc):
    from pathlib import Path

    from llama_cpp._ctypes_extensions import load_shared_library

    base = load_shared_library("ggml-base", Path(lc.__file__).parent / "lib")
    base.ggml_row_size.restype = ctypes.c_size_t
    base.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    base.ggml_quantize_chunk.restype = ctypes.c_size_t
    base.ggml_quantize_chunk.argtypes = [
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_void_p,
    ]
    return base


def write_model(lc, path) -> None:
    """A random llama with one layer per weight type the extra buffers take."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter

    rng = np.random.default_rng(0)
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    tokens = [chr(b) if b in keep else chr(next(extra)) for b in range(256)]
    tokens += ["\u0120t", "<|end|>"]
    w = GGUFWriter(str(path), "llama")
    w.add_block_count(len(TYPES))
    w.add_context_length(1024)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([1] * 257 + [3])
    w.add_token_merges(["\u0120 t"])
    w.add_bos_token_id(257)
    w.add_eos_token_id(257)

    def mat(rows, cols):
        return rng.normal(0, 0.02, (rows, cols)).astype(np.float32)

    def add(name, data, type_name):
        if type_name == "F16":
            w.add_tensor(name, data.astype(np.float16))
            return
        raw = _quantize(lc, data, type_name)
        w.add_tensor(
            name, raw.reshape(data.shape[0], -1), raw_dtype=GGMLQuantizationType(TYPES[type_name])
        )

    kv = N_EMBD // N_HEAD * N_HEAD_KV
    w.add_tensor("token_embd.weight", mat(len(tokens), N_EMBD))
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, np.float32))
    w.add_tensor("output.weight", mat(len(tokens), N_EMBD))
    for i, type_name in enumerate(TYPES):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, np.float32))
        for name, rows, cols in (
            ("attn_q", N_EMBD, N_EMBD),
            ("attn_k", kv, N_EMBD),
            ("attn_v", kv, N_EMBD),
            ("attn_output", N_EMBD, N_EMBD),
            ("ffn_gate", N_FF, N_EMBD),
            ("ffn_up", N_FF, N_EMBD),
            ("ffn_down", N_EMBD, N_FF),
        ):
            add(f"blk.{i}.{name}.weight", mat(rows, cols), type_name)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
