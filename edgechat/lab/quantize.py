"""Quantise a GGUF model yourself, through llama.cpp's own quantisation API.

Recipes:
- ``uniform``: every weight in the target type, embeddings and output head included
  (llama.cpp's ``--pure``; a row length the type cannot hold falls back per tensor);
- ``mixed``: llama.cpp's usual mixture for the type, with the token embeddings at
  8 bits and the output head at 6 bits (8 for 8-bit targets), which keeps most of
  the quality where the field says it is lost first.

The output is written to a temporary name beside the target and renamed when
complete, so a half-written model is never left as if it were whole. llama.cpp's
quantisation cannot be stopped halfway (its only callback is the log, where a Python
exception is lost), so it runs in a child process: Ctrl-C (or a closed terminal) ends
the child at once and removes its partial file; one a killed run left is removed by the
next run beside it (paths.clean_partials).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgechat.errors import EdgechatError
from edgechat.lab.imatrix import ImportanceMatrix
from edgechat.lab.quantchild import quantise_in_child

# Target -> (llama_ftype name, the tensor type it is made of)
TYPES = {
    "Q2_K": ("MOSTLY_Q2_K", "Q2_K"),
    "Q3_K_M": ("MOSTLY_Q3_K_M", "Q3_K"),
    "Q4_0": ("MOSTLY_Q4_0", "Q4_0"),
    "Q4_1": ("MOSTLY_Q4_1", "Q4_1"),
    "Q4_K_S": ("MOSTLY_Q4_K_S", "Q4_K"),
    "Q4_K_M": ("MOSTLY_Q4_K_M", "Q4_K"),
    "Q5_0": ("MOSTLY_Q5_0", "Q5_0"),
    "Q5_K_S": ("MOSTLY_Q5_K_S", "Q5_K"),
    "Q5_K_M": ("MOSTLY_Q5_K_M", "Q5_K"),
    "Q6_K": ("MOSTLY_Q6_K", "Q6_K"),
    "Q8_0": ("MOSTLY_Q8_0", "Q8_0"),
    "F16": ("MOSTLY_F16", "F16"),
    "BF16": ("MOSTLY_BF16", "BF16"),
    "IQ4_XS": ("MOSTLY_IQ4_XS", "IQ4_XS"),
    "IQ4_NL": ("MOSTLY_IQ4_NL", "IQ4_NL"),
    "IQ3_M": ("MOSTLY_IQ3_M", "IQ3_S"),
    "IQ3_XXS": ("MOSTLY_IQ3_XXS", "IQ3_XXS"),
    "IQ2_M": ("MOSTLY_IQ2_M", "IQ2_S"),
    "IQ2_S": ("MOSTLY_IQ2_S", "IQ2_XS"),
    "IQ2_XS": ("MOSTLY_IQ2_XS", "IQ2_XS"),
    "IQ2_XXS": ("MOSTLY_IQ2_XXS", "IQ2_XXS"),
    "IQ1_M": ("MOSTLY_IQ1_M", "IQ1_M"),
}
# llama-quantize's own rule (tensor_requires_imatrix in src/llama-quant.cpp, wider than
# ggml_quantize_requires_imatrix): weights in these types are refused without a matrix.
NEEDS_MATRIX = {"IQ3_XXS", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_M", "IQ1_S"}
# ggml_quantize_requires_imatrix: ggml asserts (the process dies) without a matrix.
_ALWAYS_MATRIX = {"IQ2_XXS", "IQ2_XS", "IQ1_S"}
_FULL = {"F32", "F16", "BF16"}


@dataclass(frozen=True)
class Quantized:
    path: Path
    type: str
    recipe: str
    size_in: int
    size_out: int
    bits_per_weight: float


def quantize(
    src: str | Path,
    dst: str | Path,
    qtype: str,
    recipe: str = "mixed",
    allow_requantize: bool = False,
    threads: int = 0,
    progress: Callable[[int, int], None] | None = None,
    warn: Callable[[str], None] = lambda _: None,
    *,
    imatrix: ImportanceMatrix | None = None,
    force: bool = False,
    inputs: Sequence[str | Path] = (),
) -> Quantized:
    """Quantise ``src`` to ``dst``; with ``imatrix`` (lab/imatrix.py) llama.cpp weighs
    each column by its mean squared activation. ``dst``'s folder must exist, it is never
    one of the inputs (``src``, the matrix's file, ``inputs``), and an existing ``dst``
    is replaced only with ``force``."""
    from edgechat.llama.backend import load

    load()  # llama.cpp before gguf's numpy: see llama/backend.py
    from gguf.constants import GGMLQuantizationType, LlamaFileType

    from edgechat.facts.gguf import inspect_file
    from edgechat.paths import clean_partials, partial_beside

    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    inputs = [*inputs, *([imatrix.path] if imatrix is not None and imatrix.path else [])]
    qtype = preflight(
        src, dst, qtype, recipe, allow_requantize, force, imatrix is not None, warn, inputs
    )
    ftype_name, base = TYPES[qtype]
    facts = inspect_file(src)
    if imatrix is not None:
        imatrix.check_model({t.name: t.shape for t in facts.tensors}, src.name)

    spec = {
        "ftype": int(LlamaFileType[ftype_name]),
        # Going up to full precision loses nothing more: preflight allowed it.
        "allow_requantize": allow_requantize or qtype in _FULL,
        "nthread": threads,
    }
    if recipe == "uniform":
        # Every tensor, embeddings and head too, in the target type; where a row length
        # does not fit the type's blocks llama.cpp falls back to the nearest that does.
        spec["pure"] = True
        names = {t.name for t in facts.tensors}
        have = imatrix.names if imatrix is not None else ()
        for name, field in (
            ("token_embd.weight", "token_embedding_type"),
            ("output.weight", "output_tensor_type"),
        ):
            if base in _ALWAYS_MATRIX and name in names and name not in have:
                # ggml aborts the process quantising these without data, and llama-imatrix
                # collects none for the embeddings (nor the head): 2 bits of Q2_K instead.
                spec[field] = int(GGMLQuantizationType.Q2_K)
                warn(f"{name} is Q2_K: {qtype} cannot be made without its importance data")
    else:
        spec["token_embedding_type"] = int(GGMLQuantizationType.Q8_0)
        # Q6_K needs rows in multiples of 256; smaller models often have 576 or 640.
        six_bit = "Q6_K" if facts.n_embd % 256 == 0 else "Q8_0"
        head = "Q8_0" if base in ("Q8_0", "F16", "BF16") else six_bit
        spec["output_tensor_type"] = int(GGMLQuantizationType[head])

    clean_partials(dst)  # what a killed run left beside it
    tmp = partial_beside(dst)
    try:
        rc, why = quantise_in_child(src, tmp, spec, imatrix, progress)
        if rc != 0:
            why = why or f"code {rc}"
            if "imatrix" in why or "importance matrix" in why:
                why += "; make a matrix with `edgechat calibrate` and pass --imatrix"
            raise EdgechatError(f"llama.cpp could not quantise {src.name}: {why}")
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    out = inspect_file(dst)
    return Quantized(
        dst, qtype, recipe, src.stat().st_size, dst.stat().st_size, out.bits_per_weight
    )


def preflight(
    src: Path,
    dst: Path,
    qtype: str,
    recipe: str,
    allow_requantize: bool,
    force: bool,
    has_matrix: bool,
    warn: Callable[[str], None] = lambda _: None,
    inputs: Sequence[str | Path] = (),
) -> str:
    """Every check ``quantize`` makes before any work (so ``--calibrate`` fails before
    it calibrates): returns the type's canonical name."""
    from edgechat.facts.gguf import inspect_file

    qtype = qtype.upper()
    if qtype not in TYPES:
        raise EdgechatError(f"unknown type {qtype}; choose from {', '.join(TYPES)}")
    if recipe not in ("uniform", "mixed"):
        raise EdgechatError("the recipe is uniform or mixed")
    if TYPES[qtype][1] in NEEDS_MATRIX and not has_matrix:
        raise EdgechatError(
            f"{qtype} needs an importance matrix: make one with `edgechat calibrate MODEL "
            "--text FILE` and pass --imatrix FILE (or quantize with --calibrate FILE)"
        )
    facts = inspect_file(src)  # a truncated or non-GGUF input fails here, with one line
    quantized = not full_precision(facts)
    if quantized and qtype in _FULL:
        # Nothing more is lost going up; nothing comes back either.
        warn(
            f"{src.name} is {facts.file_type}: the {qtype} file keeps its quality as it is "
            f"(what {facts.file_type} lost does not come back) in more space"
        )
    elif quantized and not allow_requantize:
        raise EdgechatError(
            f"{src.name} is already quantised ({facts.file_type}); {qtype} made from it adds "
            f"its own rounding to what {facts.file_type} lost, so it is worse than {qtype} "
            "made from the original. Start from an F16/BF16 file, or pass --allow-requantize "
            "to do it anyway"
        )
    elif quantized:
        warn(
            f"{src.name} is already quantised ({facts.file_type}): the result will be worse "
            f"than {qtype} made from the full-precision model"
        )
    _check_output(src, dst, force, inputs)
    return qtype


def full_precision(facts) -> bool:
    """Whether a model's layer weights are all F32, F16 or BF16 (what quantize takes
    without --allow-requantize)."""
    return all(t.type_name in _FULL for t in facts.tensors if t.layer is not None)


def _check_output(src: Path, dst: Path, force: bool, inputs: Sequence[str | Path] = ()) -> None:
    """The output's folder exists, it is none of the inputs (the model, the matrix, the
    texts; through a link or not), and a file there is replaced only with ``force``
    (paths.output_path)."""
    from edgechat.paths import output_path

    output_path(dst, force, inputs=[src, *inputs])


def dequantize(src: str | Path, dst: str | Path, to: str = "F16") -> Path:
    """Write a full-precision copy of a quantised GGUF (for tests and experiments): the same
    metadata and tensors, every quantised tensor expanded to ``to`` (F16 or F32)."""
    import numpy as np
    from gguf import GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType
    from gguf.quants import dequantize as expand

    src, dst = Path(src), Path(dst)
    reader = GGUFReader(src)
    arch = str(reader.fields["general.architecture"].contents())
    tmp = dst.with_name(f".{dst.name}.partial")
    writer = GGUFWriter(tmp, arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
            continue
        vtype = field.types[0]
        if vtype == GGUFValueType.ARRAY:
            writer.add_key_value(name, field.contents(), vtype, sub_type=field.types[-1])
        else:
            writer.add_key_value(name, field.contents(), vtype)
    writer.add_file_type(int(LlamaFileType.MOSTLY_F16 if to == "F16" else LlamaFileType.ALL_F32))
    dtype = np.float16 if to == "F16" else np.float32
    for t in reader.tensors:
        data = expand(t.data, t.tensor_type).reshape(list(reversed(t.shape.tolist())))
        keep_f32 = len(t.shape) == 1 or t.tensor_type.name == "F32"
        writer.add_tensor(t.name, data.astype(np.float32 if keep_f32 else dtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, dst)
    return dst
