"""What a GPU plan costs beyond the weights and the KV cache, per llama.cpp backend.

Two facts from a real H100 run (``tests/data/gpu/``) shape this module:

- ``n_gpu_layers`` counts the output head as a layer and offloads from the end:
  ``n`` puts the head and the last ``n - 1`` repeating layers on the GPU; all of
  them is ``n_layers + 1``. "Every repeating layer but not the head" cannot be
  asked for: the head goes first.
- llama.cpp's own buffers (model, KV, compute) are all it allocates; the rest of
  the GPU memory the process uses is the backend's runtime (CUDA context, cuBLAS
  workspaces), a fixed amount per backend and GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024**2


@dataclass(frozen=True)
class Runtime:
    vram: int  # the backend's own GPU memory, beyond llama.cpp's buffers
    ram: int  # its libraries and driver state in the process's RSS
    source: str


# One table, with where each figure comes from. The VRAM figure varies by GPU,
# driver and library versions: say so wherever it is shown.
GPU_RUNTIME = {
    "cuda": Runtime(
        610 * MiB,
        308 * MiB,
        "measured on an H100 80GB (driver 580, llama-cpp-python 0.3.36): 609-630 MiB of "
        "VRAM beyond llama.cpp's buffers in 10 runs, 308 MiB of RSS",
    ),
    "rocm": Runtime(610 * MiB, 308 * MiB, "typical, unmeasured: assumed the same as CUDA"),
    "vulkan": Runtime(128 * MiB, 100 * MiB, "typical, unmeasured"),
    "metal": Runtime(0, 50 * MiB, "typical, unmeasured (unified memory)"),
}
RUNTIME_VARIES = "the GPU runtime figure varies by GPU and driver"


def offload_split(n_layers: int, n_gpu_layers: int) -> tuple[int, bool]:
    """(first repeating layer on the GPU, whether the output head is on it), as llama.cpp
    assigns them: ``i_gpu_start = n_layer + 1 - n_gpu_layers``, the head being layer n_layer."""
    ngl = max(0, min(n_gpu_layers, n_layers + 1))
    return n_layers + 1 - ngl if ngl else n_layers, ngl > 0


def gpu_compute(
    *,
    ubatch: int,
    n_ctx: int,
    n_embd: int,
    n_ff: int,
    n_vocab: int,
    n_head: int,
    head_bytes: int,
    biggest_cpu_tensor: int,
    head_on_gpu: bool,
    cpu_layers: int,
    offloads_ops: bool,
    flash_attn: str,
) -> int:
    """llama.cpp's compute buffer on a discrete GPU (what it prints as ``CUDA0 compute``).

    Measured on the H100 (ubatch 512): the logits of a micro-batch and one activation
    row (254.5 MiB on the 1B, 258.5 on the 8B, at 4k and 32k alike), one more
    activation when some layers stay on the CPU (258.5 / 266.5), and with 0 layers but
    ops offloaded, the head's weights copied up for the big batches (669.5 on the 8B =
    Q6_K head 411 + logits 250.5 + 8).
    """
    act = 4 * ubatch * n_embd
    logits = 4 * ubatch * n_vocab
    need = 0
    if head_on_gpu:
        need = logits + act * (2 if cpu_layers else 1)
    if offloads_ops and not head_on_gpu:
        need = max(need, head_bytes + logits + act)
    if offloads_ops and cpu_layers:
        need = max(need, biggest_cpu_tensor + 4 * ubatch * (n_ff + n_embd))
    if flash_attn == "off":  # attention scores of a micro-batch, per head (not measured)
        need += 4 * ubatch * n_ctx * n_head
    return need


def host_compute(*, ubatch: int, n_ctx: int, n_embd: int) -> int:
    """The pinned host compute buffer (``CUDA_Host compute``): the f16 attention mask and
    two activation rows; 12.0 / 40.0 MiB on the 1B at 4k / 32k, 20.0 / 48.0 on the 8B."""
    return 2 * ubatch * n_ctx + 8 * ubatch * n_embd
