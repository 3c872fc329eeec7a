"""``--gpu BACKEND:SIZE``: a GPU this machine lacks, assumed for planning."""

from __future__ import annotations

import re

# The GPU backends --gpu accepts, and the vendor a GPU of that kind comes from.
BACKEND_VENDOR = {"cuda": "nvidia", "rocm": "amd", "vulkan": "other", "metal": "apple"}

_SPEC = re.compile(r"\s*([a-z]+)\s*:\s*(\S+)\s*")


def parse_gpu_spec(text: str) -> tuple[str, str]:
    """'cuda:80G' -> ('cuda', '80G'); raises ValueError with the accepted forms."""
    m = _SPEC.fullmatch(text.lower())
    if not m or m.group(1) not in BACKEND_VENDOR:
        raise ValueError(
            f"--gpu {text!r}: use BACKEND:SIZE with BACKEND one of "
            f"{', '.join(BACKEND_VENDOR)} (like cuda:24G or metal:16G)"
        )
    return m.group(1), m.group(2)
