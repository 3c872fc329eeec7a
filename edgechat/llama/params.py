"""From a RunPlan to llama.cpp's model and context parameters, and the checks before.

Kept apart so what the plan means to llama.cpp (devices, op offload, cache types)
reads in one place.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from edgechat.errors import EdgechatError, ModelLoadError
from edgechat.planning.plan import RunPlan

# ggml_type values for the KV cache types llama.cpp accepts.
KV_CACHE_TYPES = {
    "f32": 0,
    "f16": 1,
    "q4_0": 2,
    "q4_1": 3,
    "q5_0": 6,
    "q5_1": 7,
    "q8_0": 8,
    "bf16": 30,
}


def check_plan(plan: RunPlan) -> None:
    check_gguf_file(plan.model_path)
    if plan.flash_attn not in ("auto", "on", "off"):
        raise EdgechatError("flash attention must be auto, on or off")
    if plan.type_k not in KV_CACHE_TYPES or plan.type_v not in KV_CACHE_TYPES:
        raise EdgechatError(f"unknown KV cache type; choose one of {', '.join(KV_CACHE_TYPES)}")


def check_gguf_file(path: Path) -> None:
    """Fail early, with a clear message, on what llama.cpp would reject obscurely."""
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder, not a GGUF model file")
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc.strerror}") from None
    if magic != b"GGUF":
        raise ModelLoadError(
            f"{path} is not a GGUF model file; edgechat runs llama.cpp GGUF models "
            "(convert others with llama.cpp's convert_hf_to_gguf.py)"
        )


def model_params(lc, plan: RunPlan, extra_buffers: tuple[str, ...] = ()):
    """llama_model_params for ``plan``; keep the result alive until the model has loaded
    (it points at a device list owned by the returned tuple). ``extra_buffers``: the
    extra CPU buffer types the weights may go to (facts/kernels.py chose them)."""
    from edgechat.llama import cpubuffers

    mparams = lc.llama_model_default_params()
    mparams.n_gpu_layers = plan.n_gpu_layers
    mparams.use_mmap = plan.use_mmap
    mparams.use_extra_bufts = bool(cpubuffers.restrict(lc, extra_buffers))
    if plan.exact_batches:
        exact_kernels(mparams)
    no_devices = None
    if not plan.uses_gpu:
        # --gpu-layers 0: leave the GPU alone. An empty device list keeps llama.cpp
        # from opening a GPU context at all (a CUDA build otherwise takes VRAM for
        # its runtime and compute buffer with no layer on it), and lets the CPU
        # backend repack weights as on a CPU-only build.
        no_devices = (ctypes.c_void_p * 1)(None)
        mparams.devices = ctypes.cast(no_devices, ctypes.c_void_p)
    return mparams, no_devices


def exact_kernels(mparams) -> None:
    """Keep llama.cpp's CPU to kernels that sum a row the same way whatever else is in
    the batch. Two of its faster paths do not: repacked weights (gemm for rows in fours,
    gemv for the rest) and the tiled K-quant matmul (from 8 rows up; vec_dot below).
    ggml reads GGML_CPU_TILED_MM once per process, at its first matmul: the serving
    process sets it before it loads anything."""
    mparams.use_extra_bufts = False
    os.environ["GGML_CPU_TILED_MM"] = "0"


def context_params(lc, plan: RunPlan):
    cparams = lc.llama_context_default_params()
    cparams.n_ctx = plan.n_ctx * plan.n_seq
    cparams.n_seq_max = plan.n_seq
    # A cache of n_ctx cells for each sequence, as llama-server -np N: a sequence's
    # attention then reads only its own cells, so its tokens are exactly what it gets
    # alone. In one unified cache the other sequences' cells fall inside the attention
    # kernels' tiles and change the last bits (greedy replies drift apart).
    cparams.kv_unified = False
    cparams.n_batch = plan.n_batch
    cparams.n_ubatch = plan.n_ubatch
    cparams.n_threads = plan.n_threads
    cparams.n_threads_batch = plan.n_threads_batch
    cparams.type_k = KV_CACHE_TYPES[plan.type_k]
    cparams.type_v = KV_CACHE_TYPES[plan.type_v]
    cparams.swa_full = plan.swa_full
    cparams.op_offload = plan.offloads_ops
    cparams.flash_attn_type = {
        "auto": lc.LLAMA_FLASH_ATTN_TYPE_AUTO,
        "on": lc.LLAMA_FLASH_ATTN_TYPE_ENABLED,
        "off": lc.LLAMA_FLASH_ATTN_TYPE_DISABLED,
    }[plan.flash_attn]
    if plan.eval_callback is not None:
        cparams.cb_eval = plan.eval_callback  # the plan keeps it alive: C holds a pointer
    return cparams
