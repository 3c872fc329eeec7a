"""What both APIs (OpenAI's in app.py, Ollama's in ollama_routes.py) do with a request's
job: read the body, queue the job, hand its events from the llama thread to the request's
coroutine, and cancel it however the response ends (a client that leaves frees its slot).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import threading
import time
from collections.abc import Callable

import anyio
from pydantic_core import from_json
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from edgechat.serve import guard
from edgechat.serve.guard import SlowBody
from edgechat.serve.protocol import ApiError
from edgechat.serve.worker import Job, LlamaWorker, QueueFull

MAX_BODY = 32 * 2**20  # far beyond any context; refuses a runaway upload early
BIG_BODY = 2**20  # bodies beyond this are parsed off the event loop, two at a time


async def read_json(request: Request) -> dict:
    """The request's JSON object, or a 400 (413 for a body over MAX_BODY, counted as it
    arrives, so a chunked body with no length is held to it too; 408 for one that
    comes too slowly). pydantic's JSON parser (jiter) refuses at once what Python's
    ``json`` accepted and something later failed on with a 500: nesting deeper than
    200 (a RecursionError), a lone surrogate (text no UTF-8 can hold), NaN."""
    size = request.headers.get("content-length", "")
    if size.isdigit() and int(size) > MAX_BODY:
        raise _too_large()
    parts, got, gate = [], 0, None
    try:
        async for chunk in request.stream():
            got += len(chunk)
            if got > MAX_BODY:
                raise _too_large()
            if got > BIG_BODY and gate is None:  # a big body: hold memory to two at once
                gate = _gate(request)
                await gate.acquire()
            parts.append(chunk)
        body = b"".join(parts)
        del parts[:]
        if gate is None:
            return _parse(body)
        return await anyio.to_thread.run_sync(_parse, body)
    except ClientDisconnect:  # the client left while sending: nobody hears an answer
        raise ApiError(499, "the client closed the connection", "client_closed") from None
    except SlowBody:
        raise ApiError(
            408,
            f"the request body did not arrive within {guard.BODY_S:g} s",
            "request_timeout",
            headers={"Connection": "close"},
        ) from None
    finally:
        if gate is not None:
            gate.release()


def _parse(body: bytes) -> dict:
    try:
        obj = from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        why = str(exc).replace("recursion limit exceeded", "nested too deeply")
        if "surrogate" in why or "hex escape" in why:  # "\ud800" alone: half a character
            why = "a \\u escape that is half a character, at " + why.partition(" at ")[2]
        raise ApiError(400, f"the request body is not valid JSON ({why})", "invalid_json") from None
    if not isinstance(obj, dict):
        raise ApiError(400, "the request body must be a JSON object", "invalid_json")
    return obj


def _too_large() -> ApiError:  # the rest is not read: the connection closes
    why = f"the request is over {MAX_BODY // 2**20} MiB"
    return ApiError(413, why, "body_too_large", headers={"Connection": "close"})


def _gate(request: Request) -> anyio.Semaphore:
    state = request.app.state
    if getattr(state, "big_bodies", None) is None:
        state.big_bodies = anyio.Semaphore(2)
    return state.big_bodies


def owner_of(request: Request, req) -> str:
    """Whose caches a request may reuse (llama/batch.py): its client's address and the
    cache key it chose, if any (vLLM's ``cache_salt``, OpenAI's ``prompt_cache_key``
    and ``user``), hashed. Without a key, each machine's requests share their caches;
    with one, only requests that give the same key do."""
    chosen = [getattr(req, name, None) or "" for name in CACHE_KEYS]
    host = request.client.host if request.client else ""
    return hashlib.sha256("\0".join([host, *chosen]).encode()).hexdigest()[:32]


CACHE_KEYS = ("cache_salt", "prompt_cache_key", "user")


class Courier:
    """Wakes the event loop once per step of the llama thread, for every request whose
    job emitted during it, instead of once per event.

    A wake-up writes to the loop's self-pipe, and every write hands the GIL over: one
    per slot per token kept the llama thread waiting on the event loop between its own
    calls while several clients streamed. Posts from the llama thread wait for
    ``flush()``, which the worker calls after each step, just before the next decode
    (which runs without the GIL, so the loop's work overlaps it); posts from any other
    thread wake the loop at once. When only the middle of replies is due, a flush
    within ``GAP`` of the last wake-up waits for a later one: a screen shows no
    difference at that pace, and one fast client costs the loop half the work.
    """

    GAP = 0.015  # seconds (a 60 Hz screen draws every 0.0167)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._due: dict[Events, None] = {}  # in the order they first posted
        self._queued = False  # a delivery is scheduled on the loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._held: int | None = None  # the llama thread: its posts wait for flush()
        self._urgent = False  # a start, end, error or first piece is due
        self._last = 0.0  # when the loop was last woken

    def events(self) -> Events:
        """A new request's events (on the event loop)."""
        self._loop = asyncio.get_running_loop()
        return Events(self)

    def post(self, events: Events, urgent: bool = True) -> None:  # any thread
        with self._lock:
            self._due[events] = None
            self._urgent = self._urgent or urgent
            if self._queued or threading.get_ident() == self._held:
                return
            self._queued = True
        self._schedule()

    def flush(self) -> None:  # the llama thread, after a step
        self._held = threading.get_ident()
        now = time.perf_counter()
        with self._lock:
            if self._queued or not self._due:
                return
            if not self._urgent and now - self._last < self.GAP:
                return
            self._queued, self._urgent, self._last = True, False, now
        self._schedule()

    def _schedule(self) -> None:
        # A closed loop: the server is gone, and its requests with it.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            due, self._due, self._queued = self._due, {}, False
        for events in due:
            events.signal.set()


class Events:
    """A job's events, handed from the llama thread to this request's coroutine (the
    llama thread appends; the courier wakes the coroutine)."""

    def __init__(self, courier: Courier) -> None:
        self.ready: collections.deque[tuple] = collections.deque()
        self.signal = asyncio.Event()
        self._courier = courier
        self._streaming = False  # a piece of the reply has been emitted

    def emit(self, event: tuple) -> None:  # on the llama thread, mostly
        self.ready.append(event)
        middle = event[0] == "text" and self._streaming
        self._streaming = event[0] == "text"
        self._courier.post(self, urgent=not middle)

    async def get(self) -> tuple:
        while not self.ready:
            self.signal.clear()
            if self.ready:
                break
            await self.signal.wait()
        return self.ready.popleft()

    async def batch(self) -> list[tuple]:
        """The next event and every text piece ready behind it: a slow reader gets fewer,
        larger writes instead of a backlog of tiny ones."""
        out = [await self.get()]
        while self.ready and out[-1][0] == "text":
            out.append(self.ready.popleft())
        return out


def submit(worker: LlamaWorker, job: Job) -> None:
    try:
        worker.submit(job)
    except QueueFull as full:
        raise ApiError(
            503,
            "the server is busy: every place in its queue is taken; try again shortly",
            "server_busy",
            headers={"Retry-After": str(full.retry_after)},
        ) from None


async def started(events: Events) -> None:
    """Wait for the job to start: its prompt fitted and it has a slot. Raises its error
    (a prompt too long is a 413 even for a streamed request)."""
    first = await events.get()
    if first[0] == "error":
        raise first[1]
    if first[0] == "end":  # cancelled while it waited: the client has gone
        raise ApiError(503, "the request was cancelled", "cancelled")


async def collect(events: Events) -> tuple[str, str, object]:
    """The whole reply of a job that started: (text, finish, stats)."""
    text = []
    while True:
        event = await events.get()
        if event[0] == "text":
            text.append(event[1])
        elif event[0] == "error":
            raise event[1]
        else:
            break
    finish, stats = event[1], event[2]
    if finish == "cancelled":
        raise ApiError(503, "the server is shutting down", "shutting_down")
    return "".join(text), finish, stats


class JobStream(StreamingResponse):
    """A streamed reply whose job is cancelled however the response ends, even when the
    client left before the first byte (the body iterator then never starts)."""

    def __init__(self, worker: LlamaWorker, job: Job, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._worker, self._job = worker, job

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._worker.cancel(self._job)


async def watch_disconnect(request: Request, worker: LlamaWorker, job: Job) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            worker.cancel(job)
            return


async def run_job(
    request: Request, worker: LlamaWorker, job: Job, events: Events, reply: Callable
) -> Response:
    """Queue ``job``; once it has started, answer with ``await reply()``. While it waits
    or a whole reply is collected, a client that leaves cancels it (a streamed response
    cancels its job itself when it ends)."""
    submit(worker, job)
    watcher = asyncio.create_task(watch_disconnect(request, worker, job))
    try:
        await started(events)
        return await reply()
    except asyncio.CancelledError:
        worker.cancel(job)
        raise
    finally:
        watcher.cancel()
