"""How much memory a RunPlan needs: peak resident RAM (and VRAM) while generating.

The model follows how llama.cpp allocates, term by term, so each part can be
checked against llama.cpp's own log lines (``CPU KV buffer size = ...``):

- weights: every tensor's bytes, on the GPU for offloaded layers, else memory-mapped
  and all resident (llama.cpp touches every page on load);
- repacked weights: on AVX2 / NEON CPUs llama.cpp copies some quant types
  (Q4_0, Q4_K, IQ4_NL ...) into an interleaved layout; the copy is extra, and the
  mapped pages it came from stay resident until the OS needs them back;
- KV cache: per layer, cells x KV heads x (key + value head size) x bytes per value;
  sliding-window layers hold only their window plus one micro-batch; several sequences
  (``serve --parallel``) have a cache each;
- compute: llama.cpp reserves room for the logits of a whole micro-batch, but while
  chatting only one row of logits is produced, so on the CPU only the activations
  of one micro-batch and the attention masks become resident; on a GPU the whole
  reservation is allocated;
- process: the interpreter, edgechat and llama.cpp's libraries, plus llama.cpp's
  vocabulary tables, which grow with the number of tokens.

Two constants are calibrated on real runs (``benchmarks/memory_estimate.py``): the
process base and the bytes per vocabulary entry. The GPU side (``planning/gpu.py``)
follows llama.cpp's buffer lines and the VRAM peaks recorded on an H100
(``tests/data/gpu/``); its runtime figures sit in one table with their sources.

On a discrete GPU the peak RSS comes while loading: every page of the model file is
read (the offloaded weights on their way to the GPU), then llama.cpp unmaps what the
GPU took. So ``ram_peak`` is that load peak when it is the larger, and
``ram_needed`` what stays resident while generating.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edgechat.facts import kernels
from edgechat.planning.gpu import GPU_RUNTIME, gpu_compute, host_compute, offload_split
from edgechat.planning.plan import RunPlan

if TYPE_CHECKING:
    from edgechat.facts.gguf import ModelFacts

MiB = 1024**2

# Measured: CPython 3.11 + edgechat + llama.cpp's libraries before a model is loaded.
PROCESS_BASE = int(55.6 * MiB)
# llama_vocab keeps, per token, its text and score, a hash-map entry from text to id
# and a cached piece: about 140 bytes; 131 fits the measurements.
VOCAB_BYTES_PER_TOKEN = 131

# Bytes per value of the KV cache types llama.cpp offers.
KV_TYPE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q5_1": 24 / 32}
KV_TYPE_BYTES |= {"q5_0": 22 / 32, "q4_1": 20 / 32, "q4_0": 18 / 32, "iq4_nl": 18 / 32}

# Typical bits per weight of a whole GGUF file (embeddings and output included), as
# llama.cpp's quantize reports them for Llama-class models.
QUANT_BITS = {
    "F32": 32.0,
    "F16": 16.0,
    "BF16": 16.0,
    "Q8_0": 8.5,
    "Q6_K": 6.56,
    "Q5_K_M": 5.69,
    "Q5_K_S": 5.54,
    "Q5_0": 5.5,
    "Q4_K_M": 4.89,
    "Q4_K_S": 4.58,
    "Q4_1": 5.0,
    "Q4_0": 4.55,
    "IQ4_XS": 4.46,
    "IQ4_NL": 4.5,
    "Q3_K_XL": 4.45,  # Q3_K_L with Q8_0 embeddings and output (bartowski's XL files)
    "Q3_K_L": 4.27,
    "Q3_K_M": 3.91,
    "Q3_K_S": 3.5,
    "IQ3_M": 3.66,
    "IQ3_XXS": 3.21,
    "Q2_K": 3.0,
    "IQ2_M": 2.7,
    "IQ2_XS": 2.31,
    "IQ2_XXS": 2.06,
    "IQ1_M": 1.75,
}
# The tensor type most layer weights of a file take, for the repack rule below.
_MAIN_TYPE = {"Q4_K_M": "Q4_K", "Q4_K_S": "Q4_K", "Q5_K_M": "Q5_K", "Q5_K_S": "Q5_K"}
_MAIN_TYPE |= {"Q3_K_M": "Q3_K", "Q3_K_L": "Q3_K", "Q3_K_S": "Q3_K", "Q3_K_XL": "Q3_K"}


def repack_types(simd: tuple[str, ...] | set[str]) -> frozenset[str]:
    """Quant types llama.cpp's CPU backend re-lays out for this CPU (ggml-cpu/repack.cpp)."""
    simd = set(simd)
    types: set[str] = set()
    if "AVX2" in simd:
        types |= {"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"}
    if "AVX512" in simd:
        types |= {"Q2_K"}
    if "NEON" in simd and "I8MM" in simd:
        types |= {"Q4_0", "Q4_K", "Q5_K", "Q6_K", "Q8_0"}
    if "NEON" in simd and "DOTPROD" in simd:
        types |= {"Q4_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "MXFP4"}
    return frozenset(types)


@dataclass(frozen=True)
class Shape:
    """What the estimate needs to know about a model: its sizes and where its bytes are."""

    architecture: str
    n_params: int
    n_layers: int
    n_embd: int
    n_ff: int
    n_vocab: int
    n_head: int
    n_head_kv: tuple[int, ...]
    head_dim_k: int
    head_dim_v: int
    context_length: int
    swa_layers: tuple[bool, ...]
    sliding_window: int | None
    layers: tuple[dict[str, int], ...]  # per layer: tensor type -> bytes
    embd: tuple[str, int]  # token embeddings: type, bytes (always kept on the CPU)
    output: tuple[str, int] | None  # output head; None when tied to the embeddings
    other_bytes: int = 0  # norms and the like outside the layers

    @property
    def weight_bytes(self) -> int:
        layers = sum(sum(d.values()) for d in self.layers)
        return layers + self.embd[1] + (self.output[1] if self.output else 0) + self.other_bytes

    @classmethod
    def from_facts(cls, facts: ModelFacts) -> Shape:
        layers: list[dict[str, int]] = [{} for _ in range(facts.n_layers)]
        embd, output, other = ("F32", 0), None, 0
        for t in facts.tensors:
            if t.layer is not None and t.layer < facts.n_layers:
                layers[t.layer][t.type_name] = layers[t.layer].get(t.type_name, 0) + t.n_bytes
            elif t.name == "token_embd.weight":
                embd = (t.type_name, t.n_bytes)
            elif t.name == "output.weight":
                output = (t.type_name, t.n_bytes)
            else:
                other += t.n_bytes
        return cls(
            architecture=facts.architecture,
            n_params=facts.n_params,
            n_layers=facts.n_layers,
            n_embd=facts.n_embd,
            n_ff=facts.n_ff or 4 * facts.n_embd,
            n_vocab=facts.n_vocab,
            n_head=facts.n_head,
            n_head_kv=facts.n_head_kv,
            head_dim_k=facts.head_dim_k,
            head_dim_v=facts.head_dim_v,
            context_length=facts.context_length,
            swa_layers=facts.swa_layers,
            sliding_window=facts.sliding_window,
            layers=tuple(layers),
            embd=embd,
            output=output,
            other_bytes=other,
        )

    @classmethod
    def from_catalog(cls, arch: dict, n_params: int, quant: str) -> Shape:
        """A shape for a model not yet downloaded: catalog facts and the quant's typical bits.

        ``arch`` holds the catalog's architecture table (layers, embd, ff, vocab,
        heads, kv_heads, head_dim, tied, sliding_window, swa_every).
        """
        quant = quant.upper()
        if quant not in QUANT_BITS:
            raise ValueError(f"unknown quant {quant}; known: {', '.join(QUANT_BITS)}")
        bits = QUANT_BITS[quant]
        n_layers, n_embd, n_vocab = int(arch["layers"]), int(arch["embd"]), int(arch["vocab"])
        tied = bool(arch.get("tied", False))
        # llama.cpp's quantize keeps the output head (or tied embeddings) near 6.5 bits.
        head_bits = max(6.56, min(bits, 8.5))
        embd_type = str(arch.get("embd_type", "")).upper() or None  # a file that keeps them
        if embd_type:
            head_bits = QUANT_BITS[embd_type]
        embd_params = n_vocab * n_embd
        embd = int(embd_params * (head_bits if tied else bits) / 8)
        out = 0 if tied else int(embd_params * head_bits / 8)
        layer_params = max(0, n_params - embd_params * (1 if tied else 2))
        per_layer = int(layer_params * bits / 8) // n_layers
        main = _MAIN_TYPE.get(quant, quant)
        from edgechat.facts.gguf import swa_pattern

        window = arch.get("sliding_window")
        n_head_kv = int(arch["kv_heads"])
        head_dim = int(arch.get("head_dim") or n_embd // int(arch["heads"]))
        return cls(
            architecture=str(arch.get("architecture", "llama")),
            n_params=n_params,
            n_layers=n_layers,
            n_embd=n_embd,
            n_ff=int(arch["ff"]),
            n_vocab=n_vocab,
            n_head=int(arch["heads"]),
            n_head_kv=(n_head_kv,) * n_layers,
            head_dim_k=head_dim,
            head_dim_v=head_dim,
            context_length=int(arch.get("context", 0)),
            swa_layers=swa_pattern(n_layers, window, arch.get("swa_every")),
            sliding_window=int(window) if window else None,
            layers=tuple({main: per_layer} for _ in range(n_layers)),
            embd=(embd_type or ("Q6_K" if tied else main), embd),
            output=None if tied else ("Q6_K", out),
        )


@dataclass(frozen=True)
class MemoryEstimate:
    plan: RunPlan
    n_ctx: int  # as llama.cpp will size it (capped at the trained context, padded)
    n_gpu_layers: int  # layers really offloaded
    ram_peak: int  # peak resident set while generating, as the OS reports it
    ram_needed: int  # less the pages the OS can take back without slowing the model
    vram: int
    parts: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (ram, vram)
    backend: str | None = None
    ram_loading: int = 0  # peak RSS while loading (the whole file passes through RAM)
    op_offload: bool = False  # big batches run on the GPU (it is used even at 0 layers)

    @property
    def gpu_runtime_source(self) -> str | None:
        return GPU_RUNTIME[self.backend].source if self.backend in GPU_RUNTIME else None

    def as_dict(self) -> dict:
        return {
            "model": str(self.plan.model_path),
            "n_ctx": self.n_ctx,
            "n_seq": self.plan.n_seq,
            "n_gpu_layers": self.n_gpu_layers,
            "gpu_backend": self.backend,
            "op_offload": self.op_offload,
            "ram_peak_bytes": self.ram_peak,
            "ram_needed_bytes": self.ram_needed,
            "ram_loading_bytes": self.ram_loading,
            "vram_bytes": self.vram,
            "gpu_runtime_source": self.gpu_runtime_source,
            "parts": {k: {"ram_bytes": r, "vram_bytes": v} for k, (r, v) in self.parts.items()},
        }


def _pad(n: int, to: int) -> int:
    return -(-n // to) * to


def kv_cells(shape: Shape, plan: RunPlan, n_ctx: int) -> list[int]:
    """Cells of the KV cache per layer: sliding-window layers hold their window plus a batch."""
    ubatch = min(plan.n_ubatch, plan.n_batch, n_ctx)
    swa = min(n_ctx, _pad((shape.sliding_window or 0) + ubatch, 256))
    return [
        swa if (is_swa and not plan.swa_full) else n_ctx
        for is_swa in shape.swa_layers + (False,) * (shape.n_layers - len(shape.swa_layers))
    ][: shape.n_layers]


def effective_ctx(shape: Shape, n_ctx: int) -> int:
    """The context llama.cpp will create: capped at the trained context, padded to 256."""
    if shape.context_length and n_ctx > shape.context_length:
        n_ctx = shape.context_length
    return _pad(max(n_ctx, 1), 256)


def estimate(
    plan: RunPlan,
    shape: Shape,
    simd: tuple[str, ...] = (),
    backend: str | None = None,
) -> MemoryEstimate:
    """Peak memory of running ``plan`` on ``shape``, on a CPU with ``simd`` and a GPU ``backend``.

    ``backend`` is None for a CPU-only build; "metal" means unified memory, where the
    GPU uses the same RAM (counted once, in ``ram``, and shown again in ``vram``). A
    plan with no GPU layers and no ops offloaded leaves the GPU alone: the CPU estimate.
    """
    n_ctx = effective_ctx(shape, plan.n_ctx)
    n_layers = shape.n_layers
    uses_gpu = backend is not None and (plan.n_gpu_layers > 0 or plan.offloads_ops)
    ngl = max(0, min(plan.n_gpu_layers, n_layers + 1)) if uses_gpu else 0
    first_gpu, output_on_gpu = offload_split(n_layers, ngl)
    discrete = uses_gpu and backend != "metal"
    # With a discrete GPU in use, llama.cpp keeps CPU weights in the GPU's host buffer
    # type, ahead of the repacking ones: nothing is repacked (no CPU_REPACK line); nor
    # with exact batches, which turn repacking off, nor with CPU kernels that leave it
    # out (facts/kernels.py: plain ones asked for, or found faster in the check).
    keeps = not (discrete or plan.exact_batches) and kernels.repacks(plan.cpu_kernels)
    repack = repack_types(simd) if keeps else frozenset()
    parts: dict[str, list[int]] = {}

    def add(name: str, ram: int = 0, vram: int = 0) -> None:
        p = parts.setdefault(name, [0, 0])
        p[0] += ram
        p[1] += vram

    reclaimable = 0
    biggest_cpu = 0
    for il, types in enumerate(shape.layers):
        nbytes = sum(types.values())
        if il >= first_gpu:
            add("weights", vram=nbytes)
            continue
        add("weights", ram=nbytes)
        biggest_cpu = max(biggest_cpu, max(types.values(), default=0))
        copied = sum(b for t, b in types.items() if t in repack)
        add("repacked weights", ram=copied)
        reclaimable += copied
    add("weights", ram=shape.embd[1] + shape.other_bytes)
    head_bytes = shape.output[1] if shape.output else shape.embd[1]
    if shape.output is None:  # tied: the GPU gets its own copy of the embeddings
        if output_on_gpu:
            add("weights", vram=shape.embd[1])
    elif output_on_gpu:
        add("weights", vram=shape.output[1])
    else:
        add("weights", ram=shape.output[1])
        if shape.output[0] in repack:
            add("repacked weights", ram=shape.output[1])
            reclaimable += shape.output[1]

    cells = kv_cells(shape, plan, n_ctx)
    per_value = KV_TYPE_BYTES.get(plan.type_k, 2.0), KV_TYPE_BYTES.get(plan.type_v, 2.0)
    for il in range(n_layers):
        heads = shape.n_head_kv[il] if il < len(shape.n_head_kv) else shape.n_head_kv[-1]
        size = plan.n_seq * int(
            cells[il] * heads * (shape.head_dim_k * per_value[0] + shape.head_dim_v * per_value[1])
        )
        add("KV cache", **({"vram": size} if il >= first_gpu else {"ram": size}))

    # Attention masks: one per distinct cache size (full, sliding window), f32.
    ubatch = min(plan.n_ubatch, plan.n_batch, n_ctx)
    masks = sum(4 * ubatch * c for c in sorted(set(cells)))
    # The activations of one micro-batch: the feed-forward's three n_ff-wide tensors,
    # two residual streams, and the batch quantized for the matrix products.
    activations = 4 * ubatch * (3 * shape.n_ff + 2 * shape.n_embd)
    activations += int(ubatch * max(shape.n_embd, shape.n_ff) * 1.1)
    if discrete:
        vram = gpu_compute(
            ubatch=ubatch,
            n_ctx=n_ctx,
            n_embd=shape.n_embd,
            n_ff=shape.n_ff,
            n_vocab=shape.n_vocab,
            n_head=shape.n_head,
            head_bytes=head_bytes,
            biggest_cpu_tensor=biggest_cpu,
            head_on_gpu=output_on_gpu,
            cpu_layers=first_gpu,
            offloads_ops=plan.offloads_ops,
            flash_attn=plan.flash_attn,
        )
        add("compute", ram=host_compute(ubatch=ubatch, n_ctx=n_ctx, n_embd=shape.n_embd), vram=vram)
    else:
        add("compute", ram=activations + masks)
    add("output", ram=4 * shape.n_vocab * plan.n_seq)  # a row of logits per sequence
    add("process", ram=PROCESS_BASE + VOCAB_BYTES_PER_TOKEN * shape.n_vocab)
    if uses_gpu:
        runtime = GPU_RUNTIME.get(backend)
        add("GPU runtime", ram=runtime.ram if runtime else 0, vram=runtime.vram if runtime else 0)

    ram = sum(r for r, _ in parts.values())
    vram = sum(v for _, v in parts.values())
    if backend == "metal" and uses_gpu:  # one memory: what the GPU uses is RAM too
        ram += vram
    # While loading, every page of the file is read through RAM, the offloaded weights
    # too; llama.cpp unmaps those once they are on the GPU.
    loading = 0
    if discrete:
        loading = shape.weight_bytes + parts["process"][0] + parts["GPU runtime"][0]
    return MemoryEstimate(
        plan=plan,
        n_ctx=n_ctx,
        n_gpu_layers=ngl,
        ram_peak=max(ram, loading),
        ram_needed=ram - reclaimable,
        vram=vram,
        parts={k: (r, v) for k, (r, v) in parts.items()},
        backend=backend if uses_gpu else None,
        ram_loading=loading,
        op_offload=uses_gpu and plan.offloads_ops,
    )
