"""The HTTP side: Starlette routes speaking OpenAI's API (here) and Ollama's
(ollama_routes.py) in front of the llama worker.

A request is validated, queued, and answered from the events its job emits. The
status is decided by the first event (a prompt too long for the context is a 413 even
for a streamed request); a client that goes away cancels its job, whether it was
waiting or generating. Errors take the shape of the API that was called.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edgechat.planning.plan import Sampling
from edgechat.serve import embeddings, ollama_routes, structured
from edgechat.serve import protocol as p
from edgechat.serve.guard import BodyDeadline
from edgechat.serve.ollama import OllamaModel, error_body
from edgechat.serve.streams import (
    Courier,
    Events,
    JobStream,
    collect,
    owner_of,
    read_json,
    run_job,
)
from edgechat.serve.worker import Job, LlamaWorker


@dataclass(frozen=True)
class ServeConfig:
    model_id: str  # the name clients use; also the file's name and stem are accepted
    aliases: frozenset[str]
    sampling: Sampling  # the chat defaults; requests override some fields
    api_key: str | None = None
    meta: dict | None = None  # n_ctx and friends, shown in /v1/models
    ollama: OllamaModel | None = None  # the model in Ollama's terms (its API is off without)


def _sse(obj) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


def _ollama_path(path: str) -> bool:
    return path == "/" or path.startswith("/api/")


def build_app(worker: LlamaWorker, config: ServeConfig) -> Starlette:
    courier = Courier()
    worker.on_step = courier.flush

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

    def check_embed(request: Request, name) -> None:
        check_key(request)
        check_model(name if isinstance(name, str) else None)

    async def parse(request: Request, kind):
        body = await read_json(request)
        try:
            req = kind.model_validate(body)
        except p.ValidationError as exc:
            raise p.from_validation(exc) from None
        check_model(req.model)
        return req

    def sampling_for(req) -> Sampling:
        changes = {
            k: getattr(req, k)
            for k in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty")
            if getattr(req, k) is not None
        }
        if req.limit is not None:
            changes["max_tokens"] = req.limit
        if req.seed is not None:
            changes["seed"] = req.seed % 0xFFFFFFFF  # llama.cpp's seeds are uint32
        return replace(config.sampling, **changes)

    async def run(request: Request, req, job_args: dict, chat: bool, plan=None) -> Response:
        events = courier.events()
        sampling = plan.sampling if plan is not None else sampling_for(req)
        owner = owner_of(request, req)
        job = Job(sampling, events.emit, stops=req.stop, owner=owner, **job_args)
        rid = p.new_id("chatcmpl" if chat else "cmpl")

        async def reply() -> Response:
            if req.stream:
                return JobStream(
                    worker,
                    job,
                    _stream(job, events, rid, req, chat, plan),
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                )
            text, finish, stats = await collect(events)
            use = p.usage(stats.prompt_tokens if stats else 0, stats.gen_tokens if stats else 0)
            if stats is not None:  # the conversation's start, reused from the cache
                use["prompt_tokens_details"] = {"cached_tokens": p.cached(stats)}
            if chat:
                thinking, text, calls = structured.read_whole(plan.reader(), text)
                ids = [structured.call_id() for _ in calls]
                body = p.chat_response(
                    rid, config.model_id, text, finish, use, p.tool_calls(calls, ids)
                )
                if thinking:
                    body["choices"][0]["message"]["reasoning_content"] = thinking
            else:
                body = p.completion_response(rid, config.model_id, text, finish, use)
            if stats is not None:
                body["timings"] = p.timings(stats)
            return JSONResponse(body)

        return await run_job(request, worker, job, events, reply)

    async def _stream(
        job: Job, events: Events, rid: str, req, chat: bool, plan
    ) -> AsyncIterator[bytes]:
        model = config.model_id
        obj = "chat.completion.chunk" if chat else "text_completion"
        reader = plan.reader() if chat else None
        calls: list[dict] = []

        def deltas(found) -> bytes:  # a chat's pieces: text, thinking, whole tool calls
            out = b""
            for kind, value in found:
                if kind == "call":
                    call = p.tool_calls([value], [structured.call_id()], len(calls))
                    calls.append(value)
                    delta = {"tool_calls": call}
                else:
                    delta = {"content" if kind == "text" else "reasoning_content": value}
                out += _sse(p.chat_chunk(rid, model, delta))
            return out

        try:
            if chat:
                yield _sse(p.chat_chunk(rid, model, {"role": "assistant", "content": ""}))
            while True:
                batch = await events.batch()
                out = b""
                for event in batch:
                    if event[0] != "text":
                        break
                    if chat:
                        out += deltas(reader.feed(event[1]))
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
                if chat:
                    out = deltas(reader.end())
                    if out:
                        yield out
                    finish = "tool_calls" if calls and finish == "stop" else finish
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
                    use["prompt_tokens_details"] = {"cached_tokens": p.cached(stats)}
                    tail.append(p.usage_chunk(rid, model, obj, use))
                yield b"".join(_sse(x) for x in [*tail, "[DONE]"])
                return
        finally:
            worker.cancel(job)  # no-op once it ended; stops it when the client left

    async def chat_completions(request: Request) -> Response:
        check_key(request)
        req = await parse(request, p.ChatRequest)
        messages = structured.template_messages([m.as_engine() for m in req.messages])
        plan = structured.plan(
            worker.info,
            config.model_id,
            messages,
            sampling_for(req),
            schema=req.schema(),
            tools=req.tools,
            choice=req.tool_choice,
        )
        job_args = {"messages": plan.messages, **plan.job_args()}
        return await run(request, req, job_args, chat=True, plan=plan)

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
        """Liveness for anyone; the model and the counters only for those with the key."""
        try:
            check_key(request)
        except p.ApiError:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "ok", "model": config.model_id, **worker.status()})

    async def on_api_error(request: Request, exc: p.ApiError) -> Response:
        if not _ollama_path(request.url.path):
            return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
        # Ollama answers a prompt longer than the context with a 400, not a 413.
        status = 400 if exc.code == "context_length_exceeded" else exc.status
        return JSONResponse(error_body(exc), status_code=status, headers=exc.headers)

    async def on_http_error(request: Request, exc: HTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = (
            f"no such endpoint: {request.method} {request.url.path}"
            if exc.status_code in (404, 405)
            else str(exc.detail)
        )
        return await on_api_error(request, p.ApiError(exc.status_code, message, code))

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{name:path}", model, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route(
            "/v1/embeddings",
            embeddings.openai_route(worker, courier, config.model_id, check_embed),
            methods=["POST"],
        ),
    ]
    if config.ollama is not None:
        routes += ollama_routes.routes(worker, courier, config.ollama, config.sampling, check_key)
    return Starlette(
        routes=routes,
        middleware=[Middleware(BodyDeadline)],
        exception_handlers={p.ApiError: on_api_error, HTTPException: on_http_error},
    )
