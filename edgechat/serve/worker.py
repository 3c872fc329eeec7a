"""The llama thread of the server: one engine, one thread, a bounded queue of requests.

Every llama.cpp call (load, tokenize, decode, close) runs on this one thread: llama.cpp's
OpenMP thread team belongs to the thread that calls it, and generating from a second
thread makes a second team that fights the first for the cores (60-70 % speed on two
cores). Requests wait their turn in the queue; a full queue refuses at once, so a burst
gets a clear "come back later" instead of piling up. Each request gets its events
(start, text, end, error) through a callback the async side supplies.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edgechat.errors import ContextOverflow, EdgechatError
from edgechat.planning.plan import Sampling
from edgechat.serve.protocol import ApiError, StopFilter

FINISH = {"stop": "stop", "length": "length", "context": "length", "cancelled": "cancelled"}


class QueueFull(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__("queue full")
        self.retry_after = retry_after


@dataclass
class Job:
    """One request: a chat (``messages``) or a raw completion (``prompt``)."""

    sampling: Sampling
    emit: Callable[[tuple], None]  # called on the llama thread; must be thread-safe
    messages: list[dict] | None = None
    prompt: str | None = None
    stops: list[str] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)


class LlamaWorker:
    def __init__(self, load: Callable[[], object], queue_size: int = 32) -> None:
        self._load = load
        self.queue_size = queue_size
        self._waiting: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._current: Job | None = None
        self._stopping = False
        self._ready = threading.Event()
        self._load_error: BaseException | None = None
        self.engine = None
        self.info: dict = {}  # the engine's info(), read on the llama thread at load
        self.counts = {"served": 0, "cancelled": 0, "refused": 0, "failed": 0}
        self._mean_s = 1.0  # a running mean of request time, for Retry-After
        self._thread = threading.Thread(target=self._run, name="llama", daemon=True)

    # -- lifecycle (any thread) ---------------------------------------------------------

    def start(self) -> None:
        """Load the model on the llama thread; raises what loading raised."""
        self._thread.start()
        self._ready.wait()
        if self._load_error is not None:
            self._thread.join()
            raise self._load_error

    def stop(self, timeout: float = 10.0) -> None:
        """Refuse what waits, stop what runs, close the engine on its own thread."""
        with self._cond:
            self._stopping = True
            waiting = list(self._waiting)
            self._waiting.clear()
            self._cancel_current()
            self._cond.notify_all()
        for job in waiting:
            job.emit(("error", ApiError(503, "the server is shutting down", "shutting_down")))
        self._thread.join(timeout)

    def interrupt(self) -> None:
        """Stop generating now (Ctrl-C): what runs ends, what waits is refused."""
        with self._cond:
            waiting = list(self._waiting)
            self._waiting.clear()
            self._stopping = True
            self._cancel_current()
            self._cond.notify_all()
        for job in waiting:
            job.emit(("error", ApiError(503, "the server is shutting down", "shutting_down")))

    # -- requests (the event loop's thread) ----------------------------------------------

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._stopping:
                raise ApiError(503, "the server is shutting down", "shutting_down")
            if len(self._waiting) >= self.queue_size:
                self.counts["refused"] += 1
                ahead = len(self._waiting) + 1
                raise QueueFull(max(1, min(60, math.ceil(self._mean_s * ahead))))
            self._waiting.append(job)
            self._cond.notify()

    def cancel(self, job: Job) -> None:
        """The client went away: drop the job, or stop it after the current token."""
        with self._cond:
            job.cancelled.set()
            if self._current is job:
                self._cancel_current()
            elif job in self._waiting:
                self._waiting.remove(job)
                self.counts["cancelled"] += 1
                job.emit(("end", "cancelled", None))  # its request stops waiting too

    def _count(self, what: str) -> None:
        with self._cond:
            self.counts[what] += 1

    def _cancel_current(self) -> None:
        if self._current is not None:
            self._current.cancelled.set()
            if self.engine is not None:
                self.engine.cancel()  # also stops a long prompt between batches

    def status(self) -> dict:
        with self._cond:
            return {
                "busy": self._current is not None,
                "waiting": len(self._waiting),
                "queue_size": self.queue_size,
                **self.counts,
            }

    # -- the llama thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            self.engine = self._load()
            self.info = self.engine.info()
        except BaseException as exc:  # reported by start() on the caller's thread
            self._load_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while True:
                with self._cond:
                    while not self._waiting and not self._stopping:
                        self._cond.wait()
                    if self._stopping:
                        return
                    job = self._waiting.popleft()
                    self._current = job
                t0 = time.perf_counter()
                try:
                    self._serve(job)
                except Exception as exc:  # a bug must fail one request, not the server
                    self._count("failed")
                    why = f"internal error: {type(exc).__name__}: {exc}"
                    job.emit(("error", ApiError(500, why, "internal_error")))
                finally:
                    with self._cond:
                        self._current = None
                    self._mean_s = 0.8 * self._mean_s + 0.2 * (time.perf_counter() - t0)
        finally:
            self.engine.close()

    def _serve(self, job: Job) -> None:
        engine = self.engine
        try:
            if job.messages is not None:
                reply = engine.chat(job.messages, job.sampling, drop_oldest=False)
            else:
                reply = engine.complete(job.prompt or "", job.sampling)
        except ContextOverflow as exc:
            self._count("failed")
            job.emit(("error", ApiError(413, str(exc), "context_length_exceeded")))
            return
        except EdgechatError as exc:
            self._count("failed")
            job.emit(("error", ApiError(400, str(exc), "invalid_request")))
            return
        stops = StopFilter(job.stops)
        finish = None
        pieces = iter(reply)
        job.emit(("start",))
        try:
            for piece in pieces:
                if job.cancelled.is_set():
                    finish = "cancelled"
                    break
                text, hit = stops.feed(piece)
                if text:
                    job.emit(("text", text))
                if hit:
                    finish = "stop"
                    break
        except EdgechatError as exc:
            self._count("failed")
            job.emit(("error", ApiError(500, str(exc), "engine_error")))
            return
        finally:
            pieces.close()  # stops generation at once when we broke out early
        stats = reply.stats
        if finish is None:
            tail = stops.flush()
            if tail:
                job.emit(("text", tail))
            finish = FINISH.get(stats.finish if stats else "stop", "stop")
            if job.cancelled.is_set():
                finish = "cancelled"
        self._count("cancelled" if finish == "cancelled" else "served")
        job.emit(("end", finish, stats))
