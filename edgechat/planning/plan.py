"""RunPlan: the one description of how a model is run.

The recommender and ``service.plan_model`` build it, the memory estimate describes
it, and the engine loads the plan the estimate returned (``MemoryEstimate.plan``):
every command that loads a model goes through ``service``, so what was estimated is
what runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgechat.planning.threads import ThreadChoice

from edgechat.limits import RANDOM_SEED


def physical_cores() -> int:
    """One thread per physical core this process may use (affinity and CPU quota applied):
    llama.cpp generates fastest so on an idle machine."""
    from edgechat.planning.threads import usable_cores

    return usable_cores()


@dataclass(frozen=True)
class RunPlan:
    model_path: Path
    n_ctx: int = 4096  # tokens of context for each sequence
    # Sequences decoded together (`serve --parallel`): each has a KV cache of n_ctx cells
    # of its own in the one llama.cpp context.
    n_seq: int = 1
    n_threads: int = 0  # 0: chosen at load from the free cores (planning/threads.py)
    n_threads_batch: int = 0  # 0: same as n_threads
    n_gpu_layers: int = 0
    n_batch: int = 512
    n_ubatch: int = 512
    type_k: str = "f16"
    type_v: str = "f16"
    flash_attn: str = "auto"  # auto | on | off; auto lets llama.cpp decide, as its tools do
    # Sliding-window layers keep only their window (plus a batch), as llama.cpp's own
    # tools do; a full-size cache for them buys nothing but memory.
    swa_full: bool = False
    use_mmap: bool = True
    # Only CPU kernels whose sums do not depend on how many rows a step holds (`serve
    # --exact`): no repacked weights, no tiled K-quant path (llama/params.py). Each
    # batched reply is then exactly what it is alone, at some prompt speed.
    exact_batches: bool = False
    # llama.cpp's extra CPU kernels: auto | amx | repack | plain (facts/kernels.py). auto:
    # those a check in a child process found safe on this CPU, the faster set.
    cpu_kernels: str = "auto"
    # Let llama.cpp run large batches (prompts) on the GPU with the weights that stay in
    # RAM. None: only when some layers are offloaded, so --gpu-layers 0 leaves the GPU
    # alone (a CUDA build otherwise takes over 1 GB of VRAM with no layer on it).
    op_offload: bool | None = None
    # llama.cpp's graph callback (``cb_eval``, a ctypes function), shown every node as it
    # is computed: how `calibrate` reads activations (lab/calibrate.py). None elsewhere.
    eval_callback: object = field(default=None, compare=False, repr=False)

    @property
    def offloads_ops(self) -> bool:
        return self.op_offload if self.op_offload is not None else self.n_gpu_layers > 0

    @property
    def uses_gpu(self) -> bool:
        """Whether this plan touches the GPU at all (layers on it, or ops sent to it)."""
        return self.n_gpu_layers > 0 or self.offloads_ops

    def resolved(self, threads: ThreadChoice | None = None) -> RunPlan:
        """The plan with 'auto' fields filled in for this machine. ``threads``: the default
        thread count chosen as the model loads, from the cores free then
        (``planning.threads``); without it, one per usable core."""
        threads = self.n_threads or (threads.threads if threads else physical_cores())
        return replace(
            self,
            model_path=Path(self.model_path),
            n_threads=threads,
            n_threads_batch=self.n_threads_batch or threads,
            n_batch=min(self.n_batch, self.n_ctx),
            n_ubatch=min(self.n_ubatch, self.n_batch, self.n_ctx),
            op_offload=self.offloads_ops,
        )


@dataclass(frozen=True)
class Sampling:
    """llama.cpp's own sampler chain settings (its defaults, a little cooler)."""

    temperature: float = 0.7
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int = RANDOM_SEED  # llama.cpp's LLAMA_DEFAULT_SEED: random
    max_tokens: int = 1024
    # Constrained output (llama/grammar.py): llguidance's grammar text ("": free text),
    # and, for a lazy one, the texts after which it applies (a tool call's opening).
    grammar: str = ""
    grammar_after: tuple[str, ...] = ()
