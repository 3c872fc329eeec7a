"""A small synthetic GGUF for the tests of model stores: its structure only, since the
stores read headers and never load a model."""

from __future__ import annotations

from pathlib import Path


def tiny_gguf(path: Path, name: str = "tiny") -> Path:
    import gguf
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
