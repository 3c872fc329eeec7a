"""What llama.cpp asserts on, checked before it ever sees a file.

llama.cpp trusts much of a GGUF header: ``block_count = 0``, an expert count above its
limit or ``general.alignment`` of the wrong type end the process with SIGABRT (a
``GGML_ASSERT``), a NaN ``rope.freq_base`` gives NaN logits and an empty reply. These
checks mirror gguf.cpp's own (tensor names, dims, types, offsets laid out in order and
aligned) and the model loader's asserts, so edgechat refuses such a file with one line
and ``inspect``/``estimate``/``import`` accept only what llama.cpp would load.
"""

from __future__ import annotations

import math

from edgechat.facts.gguf import GGUFError, TensorInfo

MAX_LAYERS = 512  # LLAMA_MAX_LAYERS
MAX_EXPERTS = 512  # LLAMA_MAX_EXPERTS
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME = 64  # GGML_MAX_NAME, with its NUL
TRAILING = 1 << 20  # bytes after the last tensor that a real file never has this many of
INT64_MAX = 2**63 - 1
_UINT32 = 4
# Recurrent models have no attention heads; every other architecture needs some.
_NO_HEADS = {"mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7"}


def alignment(kv: dict, kv_types: dict, source: str) -> int:
    if "general.alignment" not in kv:
        return 32
    align = kv["general.alignment"]
    if kv_types["general.alignment"] != _UINT32 or not isinstance(align, int):
        raise GGUFError(f"{source}: general.alignment must be a 32-bit unsigned number")
    if align <= 0 or align & (align - 1):
        raise GGUFError(f"{source}: general.alignment is {align}, not a power of two")
    return align


def read_tensors(r, n_tensors: int, align: int, source: str) -> tuple[list[TensorInfo], int]:
    """Tensor infos as gguf.cpp reads them; returns them and the data section's size."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    tensors, seen, expected, data_end = [], set(), 0, 0
    for i in range(n_tensors):
        name = r.string()
        if len(name.encode()) >= MAX_NAME:
            raise GGUFError(f"{source}: tensor {i} has a name longer than llama.cpp allows")
        if name in seen:
            raise GGUFError(f"{source}: the tensor {name!r} appears twice")
        seen.add(name)
        n_dims = r.unpack("<I")
        if n_dims > MAX_DIMS:
            raise GGUFError(f"{source}: tensor {name!r} has {n_dims} dimensions (at most 4)")
        dims = [r.unpack("<q") for _ in range(n_dims)]
        n = 1
        for d in dims:
            if d <= 0 or n * d > INT64_MAX:
                raise GGUFError(f"{source}: tensor {name!r} has an impossible shape {dims}")
            n *= d
        ttype = r.unpack("<I")
        try:
            qtype = GGMLQuantizationType(ttype)
            block, size = GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise GGUFError(
                f"{source}: tensor {name!r} has type {ttype}, which llama.cpp does not know"
            ) from None
        if not dims or dims[0] % block:
            raise GGUFError(
                f"{source}: tensor {name!r} rows ({dims[0] if dims else 0}) are not whole "
                f"{qtype.name} blocks of {block}"
            )
        offset = r.unpack("<Q")
        if offset != expected:
            raise GGUFError(
                f"{source}: tensor {name!r} starts at {offset:,}, not at {expected:,} where "
                "the previous one ends (overlapping or misaligned data)"
            )
        n_bytes = n // block * size
        data_end = offset + n_bytes
        expected += -(-n_bytes // align) * align
        tensors.append(TensorInfo(name, qtype.name, n, n_bytes, tuple(dims)))
    return tensors, data_end


def model_numbers(kv: dict, kv_types: dict, tensors: list[TensorInfo], source: str) -> None:
    """The hyperparameters llama.cpp's loader asserts on or divides by."""
    from gguf.constants import MODEL_ARCH_NAMES

    arch = kv.get("general.architecture")
    known = set(MODEL_ARCH_NAMES.values()) - {"clip"}
    if not isinstance(arch, str) or arch not in known:
        shown = repr(arch)[:40]
        raise GGUFError(f"{source}: architecture {shown} is not one llama.cpp can run")

    def need(key: str, low: int, high: int | None = None, required: bool = True) -> int | None:
        value = kv.get(f"{arch}.{key}")
        if value is None:
            if required:
                raise GGUFError(f"{source}: {arch}.{key} is missing; llama.cpp needs it")
            return None
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise GGUFError(f"{source}: {arch}.{key} must be a whole number")
        top = max(values)
        if top < low or (high is not None and top > high):
            span = f"{low} to {high}" if high is not None else f"at least {low}"
            raise GGUFError(f"{source}: {arch}.{key} is {top}; llama.cpp needs {span}")
        return top

    need("block_count", 1, MAX_LAYERS)
    need("context_length", 1)
    need("embedding_length", 1)
    need("attention.head_count", 0 if arch in _NO_HEADS else 1)
    experts = need("expert_count", 0, MAX_EXPERTS, required=False) or 0
    used = need("expert_used_count", 0, experts, required=False) or 0
    if (experts > 0) != (used > 0):
        raise GGUFError(
            f"{source}: {arch}.expert_used_count must be above 0 exactly when experts are"
        )
    for key, value in kv.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise GGUFError(f"{source}: {key} is {value}; the model would compute only NaN")
        if isinstance(value, list) and any(
            isinstance(v, float) and not math.isfinite(v) for v in value
        ):
            raise GGUFError(f"{source}: {key} holds {value!r:.40}; not a finite number")
    for key in ("general.name", "tokenizer.ggml.model", "tokenizer.chat_template"):
        if key in kv and not isinstance(kv[key], str):
            raise GGUFError(f"{source}: {key} must be text")
    base = kv.get(f"{arch}.rope.freq_base")
    if isinstance(base, float) and base <= 0:
        raise GGUFError(f"{source}: {arch}.rope.freq_base is {base}; it must be above 0")
    tokens = kv.get("tokenizer.ggml.tokens")
    if tokens is not None and kv_types.get("tokenizer.ggml.tokens") != ("array", 8):
        raise GGUFError(f"{source}: tokenizer.ggml.tokens must be a list of text")
    if tokens is None or not (tokens if isinstance(tokens, int) else len(tokens)):
        raise GGUFError(f"{source} has no tokenizer vocabulary; llama.cpp cannot run it")
    if not any(t.name == "token_embd.weight" for t in tensors):
        raise GGUFError(f"{source} has no token_embd.weight tensor; llama.cpp cannot run it")


def quant_names() -> frozenset[str]:
    """Every file type llama.cpp names (Q4_K_M, IQ2_XS, F16 ...): a quant a user types
    that is none of these cannot name a file anywhere."""
    from gguf.constants import LlamaFileType

    return frozenset(
        t.name.removeprefix("MOSTLY_").removeprefix("ALL_")
        for t in LlamaFileType
        if t.name != "GUESSED"
    )
