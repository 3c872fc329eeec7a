"""The HTTP side: Starlette routes speaking OpenAI's API in front of the llama worker.

A request is validated, queued, and answered from the events its job emits. The
status is decided by the first event (a prompt too long for the context is a 413 even
for a streamed request); a client that goes away cancels its job, whether it was
waiting or generating.
"""

from __future__ import annotations

import asyncio
import collections
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from edgechat.planning.plan import Sampling
from edgechat.serve import protocol as p
from edgechat.serve.worker import Job, LlamaWorker, QueueFull

MAX_BODY = 32 * 2**20  # far beyond any context; refuses a runaway upload early


@dataclass(frozen=True)
class ServeConfig:
    model_id: str  # the name clients use; also the file's name and stem are accepted
    aliases: frozenset[str]
    sampling: Sampling  # the chat defaults; requests override some fields
    api_key: str | None = None
    meta: dict | None = None  # n_ctx and friends, shown in /v1/models


def _error(err: p.ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def _sse(obj) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


class _Events:
    """The job's events, handed from the llama thread to this request's coroutine.

    The llama thread only appends and wakes the event loop when no wake-up is pending, so
    pieces that come faster than the loop runs share one wake-up (and one GIL hand-over).
    """

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.ready: collections.deque[tuple] = collections.deque()
        self._signal = asyncio.Event()
        self._lock = threading.Lock()
        self._pending = False

    def emit(self, event: tuple) -> None:  # on the llama thread
        with self._lock:
            self.ready.append(event)
            if self._pending:
                return
            self._pending = True
        self.loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        with self._lock:
            self._pending = False
        self._signal.set()

    async def get(self) -> tuple:
        while not self.ready:
            self._signal.clear()
            if self.ready:
                break
            await self._signal.wait()
        return self.ready.popleft()


class _JobStream(StreamingResponse):
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


async def _watch_disconnect(request: Request, worker: LlamaWorker, job: Job) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            worker.cancel(job)
            return


def build_app(worker: LlamaWorker, config: ServeConfig) -> Starlette:
    def check_key(request: Request) -> None:
        if config.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            token.strip().encode(), config.api_key.encode()
        ):
            raise p.ApiError(
                401,
                "a valid API key is required: send it as 'Authorization: Bearer KEY'",
                "invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def check_model(name: str | None) -> None:
        if name and name not in config.aliases:
            raise p.ApiError(
                404,
                f"the model '{name}' does not exist here; this server has '{config.model_id}'",
                "model_not_found",
                "model",
            )

    async def parse(request: Request, kind):
        size = request.headers.get("content-length", "")
        if size.isdigit() and int(size) > MAX_BODY:
            raise p.ApiError(413, f"the request is over {MAX_BODY // 2**20} MiB", "body_too_large")
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise p.ApiError(400, "the request body is not valid JSON", "invalid_json") from None
        if not isinstance(body, dict):
            raise p.ApiError(400, "the request body must be a JSON object", "invalid_json")
        try:
            req = kind.model_validate(body)
        except p.ValidationError as exc:
            raise p.from_validation(exc) from None
        check_model(req.model)
        return req

    def sampling_for(req) -> Sampling:
        changes = {}
        if req.temperature is not None:
            changes["temperature"] = req.temperature
        if req.top_p is not None:
            changes["top_p"] = req.top_p
        if req.limit is not None:
            changes["max_tokens"] = req.limit
        if req.seed is not None:
            changes["seed"] = req.seed % 0xFFFFFFFF  # llama.cpp's seeds are uint32
        return replace(config.sampling, **changes)

    async def run(request: Request, req, job_args: dict, chat: bool) -> Response:
        events = _Events()
        job = Job(sampling_for(req), events.emit, stops=req.stop, **job_args)
        try:
            worker.submit(job)
        except QueueFull as full:
            raise p.ApiError(
                503,
                "the server is busy: every place in its queue is taken; try again shortly",
                "server_busy",
                headers={"Retry-After": str(full.retry_after)},
            ) from None
        watcher = asyncio.create_task(_watch_disconnect(request, worker, job))
        try:
            first = await events.get()
            if first[0] == "error":
                raise first[1]
            if first[0] == "end":  # cancelled while it waited: the client has gone
                raise p.ApiError(503, "the request was cancelled", "cancelled")
            rid = p.new_id("chatcmpl" if chat else "cmpl")
            if req.stream:
                watcher.cancel()  # the streaming response watches for it from here
                return _JobStream(
                    worker,
                    job,
                    _stream(worker, job, events, rid, req, chat),
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                )
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
                raise p.ApiError(503, "the server is shutting down", "shutting_down")
            use = p.usage(stats.prompt_tokens if stats else 0, stats.gen_tokens if stats else 0)
            if chat:
                body = p.chat_response(rid, config.model_id, "".join(text), finish, use)
            else:
                body = p.completion_response(rid, config.model_id, "".join(text), finish, use)
            if stats is not None:
                body["timings"] = p.timings(stats)
            return JSONResponse(body)
        except asyncio.CancelledError:
            worker.cancel(job)
            raise
        finally:
            watcher.cancel()

    async def _stream(
        worker: LlamaWorker, job: Job, events: _Events, rid: str, req, chat: bool
    ) -> AsyncIterator[bytes]:
        model = config.model_id
        obj = "chat.completion.chunk" if chat else "text_completion"
        try:
            if chat:
                yield _sse(p.chat_chunk(rid, model, {"role": "assistant", "content": ""}))
            while True:
                # Send every piece that is ready in one write: a slow reader gets fewer,
                # larger writes instead of a backlog of tiny ones.
                batch = [await events.get()]
                while events.ready and batch[-1][0] == "text":
                    batch.append(events.ready.popleft())
                out = b""
                for event in batch:
                    if event[0] != "text":
                        break
                    if chat:
                        out += _sse(p.chat_chunk(rid, model, {"content": event[1]}))
                    else:
                        out += _sse(p.completion_response(rid, model, event[1], None, None))
                if out:
                    yield out
                event = batch[-1]
                if event[0] == "text":
                    continue
                if event[0] == "error":
                    yield _sse(event[1].body())
                    return
                # "cancelled" reaches a client only when the server cut its reply (Ctrl-C):
                # it ends like any reply, so the client can tell it is not whole.
                finish, stats = event[1], event[2]
                last = (
                    p.chat_chunk(rid, model, {}, finish)
                    if chat
                    else p.completion_response(rid, model, "", finish, None)
                )
                if stats is not None:
                    last["timings"] = p.timings(stats)  # as llama-server: the server's own rates
                tail = [last]
                if req.include_usage and stats is not None:
                    use = p.usage(stats.prompt_tokens, stats.gen_tokens)
                    tail.append(p.usage_chunk(rid, model, obj, use))
                yield b"".join(_sse(x) for x in [*tail, "[DONE]"])
                return
        finally:
            worker.cancel(job)  # no-op once it ended; stops it when the client left

    async def chat_completions(request: Request) -> Response:
        check_key(request)
        req = await parse(request, p.ChatRequest)
        messages = [m.as_engine() for m in req.messages]
        return await run(request, req, {"messages": messages}, chat=True)

    async def completions(request: Request) -> Response:
        check_key(request)
        req = await parse(request, p.CompletionRequest)
        return await run(request, req, {"prompt": req.text()}, chat=False)

    async def models(request: Request) -> Response:
        check_key(request)
        entry = {
            "id": config.model_id,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "edgechat",
        }
        if config.meta:
            entry["meta"] = config.meta
        return JSONResponse({"object": "list", "data": [entry]})

    async def model(request: Request) -> Response:
        check_key(request)
        check_model(request.path_params["name"])
        listing = json.loads((await models(request)).body)
        return JSONResponse(listing["data"][0])

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": config.model_id, **worker.status()})

    async def on_api_error(request: Request, exc: p.ApiError) -> Response:
        return _error(exc)

    async def on_http_error(request: Request, exc: HTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = (
            f"no such endpoint: {request.method} {request.url.path}"
            if exc.status_code in (404, 405)
            else str(exc.detail)
        )
        return _error(p.ApiError(exc.status_code, message, code))

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{name:path}", model, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={p.ApiError: on_api_error, HTTPException: on_http_error},
    )
