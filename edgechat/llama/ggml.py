"""ggml's tensor as ctypes sees it, for graph callbacks that read activations.

llama-cpp-python binds llama.h but not ggml.h's ``struct ggml_tensor``; the layout below
is the vendored ggml's of llama-cpp-python 0.3.36 (``ggml/include/ggml.h``:
GGML_MAX_DIMS 4, GGML_MAX_SRC 10, GGML_MAX_OP_PARAMS 64, GGML_MAX_NAME 64). ``lib()``
checks it against the library's own ``ggml_tensor_overhead()`` (object header + tensor),
so a llama.cpp with another layout is refused instead of read wrongly. Op numbers are
looked up by name (``ggml_op_name``), not copied from the header.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

from edgechat.errors import EdgechatError

MAX_DIMS, MAX_SRC, MAX_OP_PARAMS, MAX_NAME = 4, 10, 64, 64
_OBJECT_SIZE = 32  # sizeof(struct ggml_object): offs, size, next, type + padding
TYPE_F32 = 0  # enum ggml_type


class Tensor(ctypes.Structure):
    pass


Tensor._fields_ = [
    ("type", ctypes.c_int),
    ("buffer", ctypes.c_void_p),
    ("ne", ctypes.c_int64 * MAX_DIMS),
    ("nb", ctypes.c_size_t * MAX_DIMS),
    ("op", ctypes.c_int),
    ("op_params", ctypes.c_int32 * (MAX_OP_PARAMS // 4)),
    ("flags", ctypes.c_int32),
    ("src", ctypes.POINTER(Tensor) * MAX_SRC),
    ("view_src", ctypes.POINTER(Tensor)),
    ("view_offs", ctypes.c_size_t),
    ("data", ctypes.c_void_p),
    ("name", ctypes.c_char * MAX_NAME),
    ("extra", ctypes.c_void_p),
    ("padding", ctypes.c_char * 8),
]


@dataclass(frozen=True)
class Ggml:
    """The few ggml-base functions a callback needs, and the op numbers it compares."""

    tensor_get: object  # ggml_backend_tensor_get(tensor, dst, offset, size)
    buffer_is_host: object  # ggml_backend_buffer_is_host(buffer)
    nbytes: object  # ggml_nbytes(tensor)
    op_mul_mat: int
    op_mul_mat_id: int


@functools.cache
def lib() -> Ggml:
    """libggml-base, loaded beside llama_cpp's own libraries (the same copy it uses)."""
    from pathlib import Path

    from edgechat.llama import backend

    lc = backend.load()
    from llama_cpp._ctypes_extensions import load_shared_library

    so = load_shared_library("ggml-base", Path(lc.__file__).parent / "lib")
    so.ggml_tensor_overhead.restype = ctypes.c_size_t
    so.ggml_tensor_overhead.argtypes = []
    if so.ggml_tensor_overhead() != _OBJECT_SIZE + ctypes.sizeof(Tensor):
        raise EdgechatError(
            "this llama.cpp build lays out its tensors differently from the ggml edgechat "
            "knows; install llama-cpp-python 0.3.36"
        )
    ptr = ctypes.POINTER(Tensor)
    so.ggml_backend_tensor_get.restype = None
    so.ggml_backend_tensor_get.argtypes = [ptr, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    so.ggml_backend_buffer_is_host.restype = ctypes.c_bool
    so.ggml_backend_buffer_is_host.argtypes = [ctypes.c_void_p]
    so.ggml_nbytes.restype = ctypes.c_size_t
    so.ggml_nbytes.argtypes = [ptr]
    so.ggml_op_name.restype = ctypes.c_char_p
    so.ggml_op_name.argtypes = [ctypes.c_int]
    ops: dict[bytes, int] = {}
    for op in range(64):  # MUL_MAT is op 29 in this ggml; never read past the name table
        name = so.ggml_op_name(op)
        if name in (b"MUL_MAT", b"MUL_MAT_ID"):
            ops[name] = op
        if len(ops) == 2:
            break
    if len(ops) != 2:
        raise EdgechatError(
            "this llama.cpp build has no MUL_MAT op; install llama-cpp-python 0.3.36"
        )
    return Ggml(
        so.ggml_backend_tensor_get,
        so.ggml_backend_buffer_is_host,
        so.ggml_nbytes,
        ops[b"MUL_MAT"],
        ops[b"MUL_MAT_ID"],
    )


def weight_name(raw: bytes) -> str:
    """A weight's own name from a scheduler copy's: ``CUDA0#blk.0.attn_k.weight#0`` ->
    ``blk.0.attn_k.weight`` (llama-imatrix's ``filter_tensor_name``)."""
    text = raw.decode("utf-8", "replace")
    if "#" in text:
        text = text.split("#", 2)[1]
    return text
