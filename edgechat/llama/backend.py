"""llama.cpp's shared libraries and its log, loaded in one place, before numpy.

Why this exists: on a CUDA build of llama-cpp-python, a process that imported numpy
before llama_cpp segfaulted inside ``llama_model_load_from_file`` (in
``llama_model::print_info``, an ``std::ostream`` insertion that ran in
libggml-cuda.so). ctypes opens libllama/libggml RTLD_LOCAL, so the C++ runtime
symbols their relocations need are bound in load order: vague-linkage template
code and ``STB_GNU_UNIQUE`` statics (locale facet ids, guard variables) go to the
first definition the dynamic linker finds in the process. numpy's extension
modules load libstdc++ (and OpenBLAS with its thread pool) first; libggml-cuda.so,
built by nvcc, exports copies of some of the same C++ symbols, and with that
order libllama's stream code ends up running against state from another copy.
The record shows the working order (llama_cpp first), and that is what this module
guarantees: every edgechat entry point that loads a model calls :func:`load` before
it reads a GGUF header (``gguf`` imports numpy) or does anything else numeric.
``llama_cpp`` imports numpy itself, but only after its libraries are loaded.

:func:`state` records whether numpy was already imported when the libraries
loaded, so tests pin the order and a GPU check can say why a load crashed.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections import deque

_LOG_DEBUG, _LOG_CONT = 1, 5  # ggml_log_level values (ggml.h)


class LlamaLog:
    """Routes llama.cpp's log to a small buffer (and stderr when verbose).

    llama.cpp has one global log callback; the last lines explain load failures and
    carry the buffer sizes the memory model is calibrated against.
    """

    def __init__(self) -> None:
        self.verbose = False
        self.lines: deque[str] = deque(maxlen=400)
        self.total = 0  # lines ever logged, so callers can mark a point
        self._partial = ""
        self._level = 0
        self._callback = None
        self.listener = None  # called with each complete line (progress of long calls)

    def install(self, llama_cpp) -> None:
        if self._callback is not None:
            return

        @llama_cpp.llama_log_callback
        def callback(level, text, user_data):  # noqa: ARG001 - C signature
            chunk = text.decode("utf-8", "replace") if text else ""
            if self.verbose:
                sys.stderr.write(chunk)
            if level != _LOG_CONT:
                self._level = level
            if self._level == _LOG_DEBUG:
                return  # thousands of lines per load; only --verbose shows them
            self._partial += chunk
            if "\n" in self._partial:
                *done, self._partial = self._partial.split("\n")
                done = [line for line in done if line.strip()]
                self.lines.extend(done)
                self.total += len(done)
                if self.listener is not None:
                    for line in done:
                        self.listener(line)

        self._callback = callback  # keep a reference: C holds only a pointer
        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))

    def mark(self) -> int:
        return self.total

    def since(self, mark: int) -> list[str]:
        """The lines logged since ``mark`` (as many as the buffer still holds)."""
        n = min(len(self.lines), self.total - mark)
        return list(self.lines)[len(self.lines) - n :] if n > 0 else []

    def first_error_since(self, mark: int) -> str:
        """The first complaint logged since ``mark``: usually the real cause."""
        for line in self.since(mark):
            low = line.lower()
            if "error" in low or "failed" in low or "invalid" in low or "not within" in low:
                return line.strip()
        return ""


LOG = LlamaLog()
_lock = threading.Lock()
_state: dict = {}


def load():
    """Load llama.cpp's libraries (``import llama_cpp``), route its log, init the backend.

    Idempotent and cheap after the first call. Call it first in anything that loads a
    model, before reading a GGUF header with ``gguf`` (numpy).
    """
    with _lock:
        if not _state:
            numpy_first = "numpy" in sys.modules
            import llama_cpp

            LOG.install(llama_cpp)
            llama_cpp.llama_backend_init()
            _state.update(loaded=True, numpy_first=numpy_first)
    import llama_cpp

    return llama_cpp


def state() -> dict:
    """``{"loaded": bool, "numpy_first": bool | None}``: whether (and in which order) the
    libraries were loaded in this process."""
    return {"loaded": bool(_state), "numpy_first": _state.get("numpy_first")}
