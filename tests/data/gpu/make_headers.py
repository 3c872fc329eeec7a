"""Write header-only GGUFs of the two models measured on the H100 (no tensor data).

The recorded models were random-weight F16 files of Llama 3.2 1B and Llama 3.1 8B
shapes (``shared/gpu/make_model.py``) quantised by llama.cpp's ``llama-quantize``
to Q4_K_M. Its type choice (llama-quant.cpp) is: Q4_K for most tensors; Q6_K for
``attn_v`` and ``ffn_down`` in the layers ``use_more_bits`` picks (the first and
last eighth, and every third between); Q6_K for the output head, or for the tied
embeddings that serve as the head; F32 norms. The sums match llama.cpp's own buffer
lines to the byte (``CUDA0 model 762.81`` and ``4403.49 MiB``), which the tests check.

    python tests/data/gpu/make_headers.py   # rewrites the .gguf files beside it
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter

HERE = Path(__file__).parent
N_VOCAB = 128256  # the Llama 3 tokenizer
# name: n_embd, n_layer, n_head, n_kv, ff, tied (as make_model.py's presets)
PRESETS = {
    "llama3.2-1b": (2048, 16, 32, 8, 8192, True),
    "llama3.1-8b": (4096, 32, 32, 8, 14336, False),
}
Q4_K, Q6_K, F32 = GGMLQuantizationType.Q4_K, GGMLQuantizationType.Q6_K, GGMLQuantizationType.F32


def use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def write(preset: str, out: Path) -> None:
    n_embd, n_layer, n_head, n_kv, ff, tied = PRESETS[preset]
    hd = n_embd // n_head
    w = GGUFWriter(str(out), "llama")
    w.add_name(f"random-{preset}")
    w.add_context_length(131072)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(15)  # MOSTLY_Q4_K_M
    w.add_vocab_size(N_VOCAB)

    def tensor(name: str, rows: int, cols: int, qtype: GGMLQuantizationType) -> None:
        block, size = GGML_QUANT_SIZES[qtype]
        n = rows * cols
        w.add_tensor_info(name, (rows, cols), np.dtype(np.float32), n // block * size, qtype)

    tensor("token_embd.weight", N_VOCAB, n_embd, Q6_K if tied else Q4_K)
    for i in range(n_layer):
        p = f"blk.{i}."
        more = use_more_bits(i, n_layer)
        tensor(p + "attn_norm.weight", 1, n_embd, F32)
        tensor(p + "attn_q.weight", n_head * hd, n_embd, Q4_K)
        tensor(p + "attn_k.weight", n_kv * hd, n_embd, Q4_K)
        tensor(p + "attn_v.weight", n_kv * hd, n_embd, Q6_K if more else Q4_K)
        tensor(p + "attn_output.weight", n_embd, n_head * hd, Q4_K)
        tensor(p + "ffn_norm.weight", 1, n_embd, F32)
        tensor(p + "ffn_gate.weight", ff, n_embd, Q4_K)
        tensor(p + "ffn_up.weight", ff, n_embd, Q4_K)
        tensor(p + "ffn_down.weight", n_embd, ff, Q6_K if more else Q4_K)
    tensor("output_norm.weight", 1, n_embd, F32)
    if not tied:
        tensor("output.weight", N_VOCAB, n_embd, Q6_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()


if __name__ == "__main__":
    for name in PRESETS:
        write(name, HERE / f"{name}-Q4_K_M.header.gguf")
        print(f"wrote {name}")
