"""The llama thread's hold on the model (serve/worker.py's ``LlamaWorker`` has these):
loading it, unloading it once it has been idle for its keep-alive (Ollama's
``keep_alive``: the memory goes back to the system) and loading it again for the next
request, and the embeddings context made beside it on the first embeddings request.

Every method but ``keep`` runs on the llama thread, under the worker's rules: its lock
(``_cond``) guards what the event loop's thread reads.
"""

from __future__ import annotations

import time

from edgechat.errors import ContextOverflow, EdgechatError
from edgechat.serve.protocol import ApiError


def give_back_memory() -> None:
    """What an unloaded model held, back to the system now: the objects that pointed
    into it (cycles wait for the collector), then the C heap's free pages (glibc keeps
    freed memory for the process; a model's buffers below its mmap threshold stay
    counted against it until trimmed)."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is not None and hasattr(libc, "malloc_trim"):  # glibc's: musl has none
        libc.malloc_trim(0)


class Residency:
    def keep(self, seconds: float | None, load: bool = True) -> None:
        """A request for the model alone (Ollama's empty generate): keep it loaded for
        ``seconds`` once idle (None: the server's default; 0: unload now), loading it
        first when ``load``."""
        with self._cond:
            self._keep = self.keep_alive if seconds is None else seconds
            self._want_load = load and self._keep != 0
            self.expires = self._deadline() if self.loaded else None
            self._cond.notify()

    def _deadline(self) -> float | None:
        return time.time() + self._keep if self._keep >= 0 else None

    def _open(self):
        from edgechat.llama.batch import Batcher

        self.engine = self._load()
        batcher = Batcher(self.engine)
        with self._cond:
            self.loaded, self._embedder = True, None
            self.expires = None if self._waiting or self._preparing else self._deadline()
            self._prep.notify_all()  # prompts wait for a loaded model
        return batcher

    def _close(self, batcher) -> None:
        """Unload: what the model holds goes back to the system (the keep-alive ran out,
        or the server stops)."""
        batcher.cancel_all()
        self.on_step()
        if self._embedder is not None:
            self._embedder.close()
        self.engine.close()
        with self._cond:
            self._embedder, self.loaded, self.expires = None, False, None
            stopping = self._stopping
        if not stopping:  # a server that stops gives everything back as its process ends
            give_back_memory()
        with self._cond:  # /api/ps shows the model until here (LlamaWorker.status)
            self.engine = None

    def _idle(self) -> bool:
        """Nothing to do (under the lock): wait, until the keep-alive runs out."""
        if self._waiting or self._active or self._stopping or self._want_load:
            return False
        if self._preparing and not self.loaded:  # their prompts need the model
            return False
        if self.loaded and self.expires is not None:
            left = self.expires - time.time()
            if left <= 0:
                return False
            self._cond.wait(left)
        else:
            self._cond.wait()
        return True

    def _refuse_all(self, why: str) -> None:
        with self._cond:
            waiting = list(self._waiting)
            self._waiting.clear()
        for job in waiting:
            self._count("failed")
            job.emit(("error", ApiError(500, why, "load_failed")))

    def _embed(self, job) -> None:
        """An embeddings request, at once, on the engine's embeddings context."""
        from edgechat.llama.embed import Embedder

        self._keep = self.keep_alive if job.keep_alive is None else job.keep_alive
        try:
            self._embedder = self._embedder or Embedder(self.engine)
            vectors, n = self._embedder(job.embed, job.truncate)
        except EdgechatError as exc:
            self._count("failed")
            code = 413 if isinstance(exc, ContextOverflow) else 400
            job.emit(("error", ApiError(code, str(exc), "invalid_request")))
            return
        self._count("served")
        for event in (("start",), ("embedding", vectors, n), ("end", "stop", None)):
            job.emit(event)
