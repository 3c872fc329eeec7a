"""Ask llama.cpp itself whether it can load a file, in a child process.

The header checks (``facts.ggufcheck``) refuse what llama.cpp asserts on, but only
llama.cpp knows every tensor each architecture needs and its shape. ``models import``
asks it before registering a file, so what is listed loads. A child process, because
an assert we did not foresee would end the process asking: here it ends only the
child, and the answer is a message. Loading maps the file and reads no weights, so
this costs about a second whatever the model's size: llama.cpp finds and checks
every tensor, then the progress callback stops it before it reads a weight.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edgechat.errors import ModelLoadError

_CHILD = r"""
import sys
import llama_cpp
llama_cpp.llama_backend_init()
lines = []
@llama_cpp.llama_log_callback
def log(level, text, data):
    if text:
        lines.append(text.decode("utf-8", "replace").strip())
llama_cpp.llama_log_set(log, None)
@llama_cpp.llama_progress_callback
def stop(progress, data):
    return False  # every tensor was found and checked: stop before reading the weights
params = llama_cpp.llama_model_default_params()
params.n_gpu_layers = 0
params.use_mmap = False  # a mapping would be filled with the whole file first
params.progress_callback = stop
model = llama_cpp.llama_model_load_from_file(sys.argv[1].encode(), params)
if not model and any("cancelled" in l for l in lines):
    sys.exit(0)
if not model:
    said = [l.split("error loading model:", 1)[1] for l in lines if "error loading model:" in l]
    reason = said[-1].strip() if said else ""
    print(reason or "llama.cpp could not load it")
    sys.exit(3)
llama_cpp.llama_model_free(model)
"""


def check_loads(path: Path, timeout: float = 300.0) -> None:
    """Return when llama.cpp loads ``path``; else ModelLoadError with its reason.

    Without llama-cpp-python (an install for planning only) there is no one to ask.
    """
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        return
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise ModelLoadError(
            f"llama.cpp did not finish loading {path} in {timeout:.0f} s"
        ) from None
    if done.returncode == 0:
        return
    if done.returncode == 3:
        why = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "no reason given"
        raise ModelLoadError(f"llama.cpp cannot load {path}: {why}")
    if "No module named" in done.stderr:
        raise ModelLoadError("llama-cpp-python is not installed: pip install llama-cpp-python")
    raise ModelLoadError(
        f"llama.cpp crashed loading {path} (exit {done.returncode}); it is damaged or made "
        "for a newer llama.cpp: update llama-cpp-python or download it again"
    )
