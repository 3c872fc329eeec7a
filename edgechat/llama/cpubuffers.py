"""llama.cpp's extra CPU buffer types, and which of them the next model load may use.

A model's weights go to the first buffer type in the CPU's list that takes them: on an
x86 build that is ``AMX`` (built where the compiler targets a CPU with AMX), then
``CPU_REPACK`` (weights reordered for the SIMD kernels), then plain CPU memory.
``use_extra_bufts = False`` drops them all; llama.cpp has no switch for one of them.
It reads the list from the CPU device (``ggml_backend_dev_get_extra_bufts``) each time
a model loads, and that list is a NULL-terminated array the CPU backend owns for the
life of the process: :func:`restrict` rewrites it to the types a load may use, from the
full list read the first time, so a later load can have any other subset back. Every
load of this process goes through here (``llama/params.py``), on one thread at a time.
"""

from __future__ import annotations

import ctypes
import functools
import threading

_GGML_BACKEND_DEVICE_TYPE_CPU = 0
_lock = threading.Lock()


@functools.cache
def _device_list(lc) -> tuple[ctypes.Array | None, tuple[tuple[str, int], ...]]:
    """The CPU device's extra buffer array (None when this build has none) and the
    (name, buffer type) pairs it held when first read."""
    from pathlib import Path

    from llama_cpp._ctypes_extensions import load_shared_library

    lib = Path(lc.__file__).parent / "lib"
    ggml = load_shared_library("ggml", lib)
    base = load_shared_library("ggml-base", lib)
    ggml.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    ggml.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    base.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
    base.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
    base.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    base.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    base.ggml_backend_buft_name.restype = ctypes.c_char_p
    base.ggml_backend_buft_name.argtypes = [ctypes.c_void_p]
    dev = ggml.ggml_backend_dev_by_type(_GGML_BACKEND_DEVICE_TYPE_CPU)
    if not dev:
        return None, ()
    reg = base.ggml_backend_dev_backend_reg(dev)
    fn = base.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_dev_get_extra_bufts")
    if not fn:
        return None, ()
    get = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(fn)
    array = get(dev)
    found = []
    while array and array[len(found)]:
        buft = array[len(found)]
        found.append((base.ggml_backend_buft_name(buft).decode("ascii", "replace"), buft))
    return array, tuple(found)


def names(lc) -> tuple[str, ...]:
    """Every extra CPU buffer type this build of llama.cpp has, in its own order."""
    return tuple(name for name, _ in _device_list(lc)[1])


def restrict(lc, allowed) -> tuple[str, ...]:
    """Let the next model load use only the extra buffer types named in ``allowed`` (in
    llama.cpp's order); returns those the build has among them."""
    array, found = _device_list(lc)
    keep = [(name, buft) for name, buft in found if name in set(allowed)]
    if array is None:
        return ()
    with _lock:
        for i in range(len(found) + 1):  # the terminating NULL moves up with the list
            array[i] = keep[i][1] if i < len(keep) else None
    return tuple(name for name, _ in keep)
