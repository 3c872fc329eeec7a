"""The llama thread of the server: one engine, one thread, its sequences as slots, and a
bounded queue of requests waiting for a slot.

Every llama.cpp call that computes (load, decode, close) runs on this one thread:
llama.cpp's OpenMP thread team belongs to the thread that calls it, and generating from
a second thread makes a second team that fights the first for the cores (60-70 % speed
on two cores). The thread admits waiting requests into free slots, then advances every
slot by one decode (llama/batch.py), and between two steps frees the slots of clients
that left. A full queue refuses at once, so a burst gets a clear "come back later"
instead of piling up. Each request gets its events (start, text, end, error) through a
callback the async side supplies.

A request's prompt is built before it waits for a slot, once, on the worker's prompt
thread: the chat template rendered, the text tokenized, old turns dropped to fit, every
token a client sent checked against the vocabulary. llama.cpp's tokenizer only reads the
model (llama-server tokenizes in its HTTP threads while it decodes), and the tokenizing
runs without the GIL, so a long prompt costs its sender time, not the other streams:
a 30 MB prompt or a chat of a thousand turns no longer stops every reply while it is
read. Each prompt has a budget: a text certainly too long for the context is refused
by its size before it is tokenized, and the template's renders share a few seconds.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edgechat.planning.plan import Sampling
from edgechat.serve.prepare import Preparing
from edgechat.serve.protocol import ApiError
from edgechat.serve.residency import Residency

FINISH = {"stop": "stop", "length": "length", "context": "length", "cancelled": "cancelled"}


class QueueFull(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__("queue full")
        self.retry_after = retry_after


@dataclass(eq=False)
class Job:
    """One request: a chat (``messages``) or a raw completion (``prompt``).

    ``prefix``: tokens the prompt continues (Ollama's ``context``); ``drop_oldest``: old
    turns make way when the chat outgrows the context (Ollama's rule) instead of a 413;
    ``n_ctx``: a smaller context for this request (0: the slot's); ``owner``: whose
    cache it may reuse (llama/batch.py; "" for every request that gives none).
    """

    sampling: Sampling
    emit: Callable[[tuple], None]  # called on the llama thread; must be thread-safe
    messages: list[dict] | None = None
    prompt: str | None = None
    stops: list[str] = field(default_factory=list)
    prefix: list[int] = field(default_factory=list)
    drop_oldest: bool = False
    n_ctx: int = 0
    owner: str = ""
    cancelled: threading.Event = field(default_factory=threading.Event)
    t_request: float = field(default_factory=time.perf_counter)
    seq: int = -1  # its slot while it runs
    started: bool = False
    tokens: list[int] = field(default_factory=list)  # the prompt, once built
    dropped: int = 0
    want_context: bool = False  # Ollama's generate: the tokens so far, given back at the end
    failed: bool = False  # its error was sent: nothing more is
    context: list[int] | None = None
    tools: list[dict] | None = None  # rendered by the chat template (llama/tools.py)
    prefill: str = ""  # the reply's start, written into the prompt (a forced tool call)
    think: bool | None = None  # the template's thinking switch (None: its default)
    embed: list[str] | None = None  # an embeddings request: these texts, one vector each
    truncate: bool = True  # embeddings: cut a text longer than the window
    keep_alive: float | None = None  # seconds the model stays loaded after (<0: always)


class LlamaWorker(Residency, Preparing):
    def __init__(
        self, load: Callable[[], object], queue_size: int = 32, keep_alive: float = -1
    ) -> None:
        """``keep_alive``: seconds the model stays loaded once idle (<0: while the server
        runs; 0: it unloads after each request), unless a request says otherwise."""
        self._load = load
        self.queue_size = queue_size
        self.keep_alive = keep_alive
        self._keep = keep_alive  # the latest request's keep_alive
        self.expires: float | None = None  # time.time() when an idle model unloads
        self.loaded = False  # the prompt thread builds only while it is (residency.py)
        self._want_load = False
        self._preparing: collections.deque[Job] = collections.deque()  # prompts to build
        self._waiting: collections.deque[Job] = collections.deque()  # built, for a slot
        self._active: dict[int, Job] = {}  # slot -> job
        self._leaving: list[Job] = []  # running jobs whose clients left: freed between steps
        self._building: Job | None = None  # the job whose prompt is being built
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # the llama thread waits on it
        self._prep = threading.Condition(lock)  # the prompt thread waits on it
        self._stopping = False
        self._ready = threading.Event()
        self._load_error: BaseException | None = None
        self.engine = None
        self.slots = 0
        self._free = 0  # slots free as of the llama thread's last look
        self.info: dict = {}  # the engine's info(), read on the llama thread at load
        self.counts = {"served": 0, "cancelled": 0, "refused": 0, "failed": 0}
        self.peak = 0  # the most replies generated at once so far
        self._follow = None  # the thread count, following the free cores (planning/follow.py)
        self._mean_s = 1.0  # a running mean of request time, for Retry-After
        # Called on the llama thread after each step, before the next decode: the app's
        # courier wakes the event loop there, once for all the step's events.
        self.on_step: Callable[[], None] = lambda: None
        self._thread = threading.Thread(target=self._run, name="llama", daemon=True)
        self._prompts = threading.Thread(target=self._prepare, name="prompts", daemon=True)

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
        self.interrupt()
        self._thread.join(timeout)
        if self._prompts.is_alive():
            self._prompts.join(timeout)

    def interrupt(self) -> None:
        """Stop generating now (Ctrl-C): what runs ends, what waits is refused."""
        with self._cond:
            waiting = [*self._preparing, *self._waiting]
            self._preparing.clear()
            self._waiting.clear()
            self._stopping = True
            if self._building is not None:  # stop its template's render
                self._building.cancelled.set()
            self._cond.notify_all()
            self._prep.notify_all()
        for job in waiting:
            job.emit(("error", ApiError(503, "the server is shutting down", "shutting_down")))

    # -- requests (the event loop's thread) ----------------------------------------------

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._stopping:
                raise ApiError(503, "the server is shutting down", "shutting_down")
            queued = len(self._waiting) + len(self._preparing)
            if queued >= self.queue_size + self._free:
                self.counts["refused"] += 1
                each = self._mean_s / max(1, self.slots)
                raise QueueFull(max(1, min(60, math.ceil(each * (queued + 1)))))
            self._preparing.append(job)
            self.expires = None  # busy: the keep-alive counts from the next idle moment
            self._prep.notify()
            self._cond.notify()  # an unloaded model loads again for it

    def cancel(self, job: Job) -> None:
        """The client went away: drop the job, or free its slot before the next step."""
        with self._cond:
            job.cancelled.set()
            for queue in (self._preparing, self._waiting):
                if job not in queue:
                    continue
                queue.remove(job)
                self.counts["cancelled"] += 1
                job.emit(("end", "cancelled", None))  # its request stops waiting too
                return
            if self._active.get(job.seq) is job:
                self._leaving.append(job)
                self._cond.notify()

    def status(self) -> dict:
        with self._cond:
            return {
                "busy": bool(self._active),
                "active": len(self._active),
                "peak_active": self.peak,
                "slots": self.slots,
                "waiting": len(self._waiting) + len(self._preparing),
                "queue_size": self.queue_size,
                # until its memory is given back (``loaded`` falls as unloading begins)
                "loaded": self.engine is not None,
                "expires_at": self.expires,  # time.time() of the unload; None: not planned
                **self.counts,
                **self._threads(),
            }

    def _threads(self) -> dict:
        """The CPU threads llama.cpp decodes on now, and why."""
        follow = self._follow
        if follow is None:  # --threads (or the threads setting) fixed them
            n, why = self.info.get("n_threads"), "fixed by --threads or the threads setting"
            return {"threads": n, "threads_follow": False, "threads_why": why}
        why = f"following the free cores: {follow.why}"
        return {"threads": follow.threads, "threads_follow": True, "threads_why": why}

    # -- the llama thread -----------------------------------------------------------------

    def _run(self) -> None:
        self._embedder = None
        try:
            batcher = self._open()
            self.info = self.engine.info()
            self._follow = _follower(self.engine)
        except BaseException as exc:  # reported by start() on the caller's thread
            self._load_error = exc
            self._ready.set()
            return
        self.slots = self._free = len(batcher.slots)
        self._prompts.start()
        self._ready.set()
        try:
            while True:
                with self._cond:
                    while self._idle():
                        pass
                    if self._stopping:
                        return
                    leaving, self._leaving = self._leaving, []
                    prompts = self._preparing or self._building is not None
                    wanted = bool(self._waiting or prompts) or self._want_load
                    self._want_load = False
                    unload = batcher is not None and not wanted and not self._active
                    if unload:  # from here the prompt thread starts nothing on the model
                        self.loaded = False
                if unload:
                    self._close(batcher)  # the keep-alive ran out
                    batcher = None
                    continue
                if batcher is None:
                    try:
                        batcher = self._open()
                    except Exception as exc:
                        self._refuse_all(f"the model could not be loaded again: {exc}")
                        continue
                for job in leaving:
                    if self._active.get(job.seq) is job:  # not ended meanwhile
                        batcher.cancel(job.seq)  # its on_end reports it
                with self._cond:
                    starts = []
                    while self._waiting and len(starts) < batcher.free:
                        starts.append(self._waiting.popleft())
                for i, job in enumerate(starts):
                    try:
                        if job.embed is not None:
                            self._embed(job)
                        elif not self._start(batcher, job):  # no room in the cache: wait
                            self._requeue(starts[i:])
                            break
                    except Exception as exc:  # a bug must fail one request, not the server
                        self._internal(job, exc)
                        if self._active.get(job.seq) is job:
                            batcher.cancel(job.seq)
                if batcher.busy:
                    if self._follow is not None:  # the thread count the cores allow now
                        batcher.set_threads(self._follow.before())
                    try:
                        self._requeue(self._jobs_of(batcher.step()))
                    except Exception as exc:  # ... or the requests of one step
                        for job in list(self._active.values()):
                            self._internal(job, exc)
                        batcher.reset()
                        with self._cond:
                            self._active.clear()
                    self._measured(batcher)
                self.on_step()
                with self._cond:
                    self._free = batcher.free
                    idle = not (self._active or self._waiting or self._preparing)
                    if idle and self._building is None and self.expires is None:
                        self.expires = self._deadline()
        finally:
            self._prompts.join(30)  # it may be tokenizing: the model must outlive that
            if batcher is not None and not self._prompts.is_alive():
                self._close(batcher)

    def _measured(self, batcher) -> None:
        """Tell the thread count's policy what the step's decode cost, and whether the
        server now waits for requests."""
        follow = self._follow
        if follow is not None:
            if batcher.decoded is not None:
                follow.after(*batcher.decoded)
            if not batcher.busy:
                follow.pause()

    def _requeue(self, jobs: list[Job]) -> None:
        with self._cond:
            self._waiting.extendleft(reversed(jobs))

    def _jobs_of(self, reqs) -> list[Job]:
        jobs = []
        for req in reqs:
            job = next(j for j in self._active.values() if j.tokens is req.tokens)
            with self._cond:
                del self._active[job.seq]
            job.seq = -1
            jobs.append(job)
        return jobs

    def _internal(self, job: Job, exc: Exception) -> None:
        job.failed = True
        self._count("failed")
        why = f"internal error: {type(exc).__name__}: {exc}"
        job.emit(("error", ApiError(500, why, "internal_error")))

    def _count(self, what: str) -> None:
        with self._cond:
            self.counts[what] += 1

    def _start(self, batcher, job: Job) -> bool:
        """Build the job's prompt and give it a slot; False when it must wait."""
        from edgechat.llama.batch import SeqRequest

        if job.cancelled.is_set():
            self._count("cancelled")
            job.emit(("end", "cancelled", None))
            return True
        self._keep = self.keep_alive if job.keep_alive is None else job.keep_alive

        parts: list[str] = []

        def on_text(text: str) -> None:
            if job.want_context:
                parts.append(text)
            job.emit(("text", text))

        def on_end(stats, error) -> None:
            with self._cond:
                self._active.pop(job.seq, None)
            if job.failed:
                return
            if job.want_context:
                reply = self.engine.tokenize("".join(parts), add_special=False)
                job.context = [*job.tokens, *reply]
            self._mean_s = 0.8 * self._mean_s + 0.2 * (time.perf_counter() - job.t_request)
            if error is not None:
                self._count("failed")
                job.emit(("error", ApiError(500, str(error), "engine_error")))
                return
            finish = FINISH.get(stats.finish, "stop")
            if job.cancelled.is_set():
                finish = "cancelled"
            self._count("cancelled" if finish == "cancelled" else "served")
            job.emit(("end", finish, stats))

        req = SeqRequest(
            job.tokens,
            job.sampling,
            on_text,
            on_end,
            tuple(job.stops or ()),
            job.n_ctx,
            job.dropped,
            job.t_request,
            job.owner,
        )
        seq = batcher.admit(req)
        if seq is None:
            return False
        job.seq = seq
        with self._cond:
            self._active[seq] = job
            self.peak = max(self.peak, len(self._active))
            if job.cancelled.is_set():  # its client left while it was being admitted
                self._leaving.append(job)
        if not job.started:
            job.started = True
            job.emit(("start",))
        return True


def _follower(engine):
    """A thread count that follows the free cores, where the engine chose its own at load
    (None: ``--threads`` or the threads setting fixed it)."""
    from edgechat.planning.follow import ThreadFollower
    from edgechat.planning.threads import OthersBusy

    choice = getattr(engine, "threads", None)
    if choice is None:
        return None
    return ThreadFollower(choice.usable, engine.plan.n_threads, OthersBusy().read, why=choice.why)
