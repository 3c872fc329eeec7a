"""A tiny full-precision llama model llama.cpp can run: random weights, two layers, a
byte-level BPE vocabulary (one token per byte, one merge, an end-of-text token). For
tests where quantising or calibrating is the point and the model's skill is not: it
loads, calibrates and quantises in a blink."""

from __future__ import annotations

from pathlib import Path


def _byte_tokens() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes (its ``bytes_to_unicode``)."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def write_tiny_llama(
    path: Path, n_embd: int = 256, n_layer: int = 2, n_ff: int = 512, n_expert: int = 0
) -> Path:
    """``n_expert``: a mixture of experts (two used per token), as Mixtral is."""
    import numpy as np
    from gguf import GGUFWriter

    rng = np.random.default_rng(0)
    tokens = [*_byte_tokens(), "\u0120t", "<|endoftext|>"]
    n_vocab = len(tokens)
    w = GGUFWriter(path, "llama")
    w.add_name("tiny random llama")
    w.add_block_count(n_layer)
    w.add_context_length(2048)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_rope_dimension_count(n_embd // 4)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(0)  # ALL_F32
    if n_expert:
        w.add_expert_count(n_expert)
        w.add_expert_used_count(2)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([1] * (n_vocab - 1) + [3])
    w.add_token_merges(["\u0120 t"])
    w.add_bos_token_id(n_vocab - 1)
    w.add_eos_token_id(n_vocab - 1)
    w.add_add_bos_token(True)  # so every chunk starts with BOS

    def mat(rows: int, cols: int):
        return rng.normal(0, 0.05, (rows, cols)).astype(np.float32)

    def norm():
        return rng.uniform(0.5, 1.5, n_embd).astype(np.float32)

    w.add_tensor("token_embd.weight", mat(n_vocab, n_embd))
    w.add_tensor("output_norm.weight", norm())
    w.add_tensor("output.weight", mat(n_vocab, n_embd))
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", norm())
        w.add_tensor(f"blk.{i}.attn_q.weight", mat(n_embd, n_embd))
        w.add_tensor(f"blk.{i}.attn_k.weight", mat(n_embd // 2, n_embd))
        w.add_tensor(f"blk.{i}.attn_v.weight", mat(n_embd // 2, n_embd))
        w.add_tensor(f"blk.{i}.attn_output.weight", mat(n_embd, n_embd))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", norm())
        if n_expert:
            w.add_tensor(f"blk.{i}.ffn_gate_inp.weight", mat(n_expert, n_embd))
            for part, rows, cols in (("gate", n_ff, n_embd), ("up", n_ff, n_embd)) + (
                ("down", n_embd, n_ff),
            ):
                experts = np.stack([mat(rows, cols) for _ in range(n_expert)])
                w.add_tensor(f"blk.{i}.ffn_{part}_exps.weight", experts)
        else:
            w.add_tensor(f"blk.{i}.ffn_gate.weight", mat(n_ff, n_embd))
            w.add_tensor(f"blk.{i}.ffn_up.weight", mat(n_ff, n_embd))
            w.add_tensor(f"blk.{i}.ffn_down.weight", mat(n_embd, n_ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
