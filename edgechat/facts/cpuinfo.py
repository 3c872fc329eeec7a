"""The CPU's model and SIMD features from /proc/cpuinfo (x86 and ARM)."""

from __future__ import annotations

# The SIMD features llama.cpp's CPU kernels care about, as /proc/cpuinfo spells them.
_SIMD = {
    "pni": "SSE3",  # Linux calls SSE3 "pni"
    "ssse3": "SSSE3",
    "avx": "AVX",
    "avx2": "AVX2",
    "fma": "FMA",
    "f16c": "F16C",
    "avx512f": "AVX512",
    "avx512_vnni": "AVX512_VNNI",
    "avx512_bf16": "AVX512_BF16",
    "avx_vnni": "AVX_VNNI",
    "avx512vbmi": "AVX512_VBMI",
    "avx512_fp16": "AVX512_FP16",
    "bmi2": "BMI2",
    "amx_int8": "AMX_INT8",
    "neon": "NEON",
    "asimd": "NEON",
    "asimddp": "DOTPROD",
    "i8mm": "I8MM",
    "sve": "SVE",
    "fphp": "FP16",
}

# ARM cores by /proc/cpuinfo "CPU part" (Arm Ltd. implementer 0x41): the Pi family and kin.
_ARM_PARTS = {
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd09": "Cortex-A73",
    "0xd0a": "Cortex-A75",
    "0xd0b": "Cortex-A76",
    "0xd0d": "Cortex-A77",
    "0xd41": "Cortex-A78",
    "0xd0c": "Neoverse-N1",
    "0xd40": "Neoverse-V1",
    "0xd4f": "Neoverse-V2",
}


def parse_cpuinfo(text: str) -> tuple[str | None, tuple[str, ...]]:
    """CPU model name and SIMD features from /proc/cpuinfo (x86 or ARM)."""
    fields: dict[str, str] = {}
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        value = value.strip()
        if key in ("flags", "features"):
            flags.update(value.split())
        elif value:
            fields.setdefault(key, value)
    model = fields.get("model name") or fields.get("cpu model")
    if model is None and fields.get("cpu implementer") == "0x41":
        model = _ARM_PARTS.get(fields.get("cpu part", ""))
    model = model or fields.get("hardware")
    simd = sorted({_SIMD[f] for f in flags if f in _SIMD})
    return model, tuple(simd)
