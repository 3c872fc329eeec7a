"""Ollama's API beside OpenAI's, on the same worker and the same key rule: chat and
generate (NDJSON streams, or one object with ``"stream": false``), and the model
listings its clients read (tags, show, ps, version). Open WebUI, oterm, Enchanted and
the ``ollama`` packages talk to ``edgechat serve`` as to an Ollama server.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from edgechat.planning.plan import Sampling
from edgechat.serve import ollama as o
from edgechat.serve.protocol import ApiError, ValidationError
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


def _line(obj: dict) -> bytes:
    return (json.dumps(obj, ensure_ascii=False) + "\n").encode()


def routes(
    worker: LlamaWorker,
    courier: Courier,
    model: o.OllamaModel,
    defaults: Sampling,
    check_key: Callable,
) -> list[Route]:
    names = model.aliases()

    async def parse(request: Request, kind):
        check_key(request)
        body = await read_json(request)
        try:
            req = kind.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first.get("loc", ()))
            raise ApiError(400, f"{where}: {first.get('msg', 'invalid')}") from None
        if req.model not in names:
            raise ApiError(404, f'model "{req.model}" not found; this server has "{model.name}"')
        req.unsupported(model.name)
        return req

    def loaded(req, chat: bool) -> Response:
        """An empty request loads (or, with keep_alive 0, unloads) the model in Ollama:
        here it is always loaded, and stays so while the server runs."""
        base = {"model": req.model, "created_at": o.stamp()}
        base |= {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
        reason = "unload" if req.unloads else "load"
        return JSONResponse({**base, "done": True, "done_reason": reason})

    async def answer(request: Request, req, job: Job, events: Events, chat: bool) -> Response:
        def base(text: str) -> dict:
            return o.chat_chunk(req.model, text) if chat else o.generate_chunk(req.model, text)

        def last(finish: str, stats, text: str) -> dict:
            out = o.final(base(text), finish, stats, job.t_request)
            if job.want_context and job.context is not None:
                out["context"] = job.context
            return out

        async def lines() -> AsyncIterator[bytes]:
            try:
                while True:
                    batch = await events.batch()
                    out = b"".join(_line(base(e[1])) for e in batch if e[0] == "text")
                    if out:
                        yield out
                    event = batch[-1]
                    if event[0] == "text":
                        continue
                    if event[0] == "error":
                        yield _line(o.error_body(event[1]))
                    elif event[1] != "cancelled":  # shutting down: no pretended end
                        yield _line(last(event[1], event[2], ""))
                    return
            finally:
                worker.cancel(job)

        async def reply() -> Response:
            if req.stream:
                return JobStream(worker, job, lines(), media_type="application/x-ndjson")
            text, finish, stats = await collect(events)
            return JSONResponse(last(finish, stats, text))

        return await run_job(request, worker, job, events, reply)

    async def chat(request: Request) -> Response:
        req = await parse(request, o.ChatRequest)
        if not req.messages:
            return loaded(req, chat=True)
        sampling, n_ctx, stops = o.sampling(req.options, defaults, model.context_length)
        events = courier.events()
        messages = [m.as_engine() for m in req.messages]
        # Ollama's rule: the oldest turns make way when a chat outgrows the context.
        job = Job(
            sampling,
            events.emit,
            messages,
            stops=stops,
            drop_oldest=True,
            n_ctx=n_ctx,
            owner=owner_of(request, req),
        )
        return await answer(request, req, job, events, chat=True)

    async def generate(request: Request) -> Response:
        req = await parse(request, o.GenerateRequest)
        if not req.prompt and not req.context:
            return loaded(req, chat=False)
        sampling, n_ctx, stops = o.sampling(req.options, defaults, model.context_length)
        events = courier.events()
        owner = owner_of(request, req)
        if req.raw:
            job = Job(
                sampling, events.emit, prompt=req.prompt, stops=stops, n_ctx=n_ctx, owner=owner
            )
        else:
            job = Job(
                sampling,
                events.emit,
                req.messages(),
                stops=stops,
                prefix=list(req.context or []),
                n_ctx=n_ctx,
                want_context=True,
                owner=owner,
            )
        return await answer(request, req, job, events, chat=False)

    async def tags(request: Request) -> Response:
        check_key(request)
        return JSONResponse({"models": [model.tag()]})

    async def show(request: Request) -> Response:
        check_key(request)
        body = await read_json(request)
        name = body.get("model") or body.get("name")  # older clients send "name"
        if not isinstance(name, str) or not name:
            raise ApiError(400, "model is required")
        if name not in names:
            raise ApiError(404, f'model "{name}" not found; this server has "{model.name}"')
        return JSONResponse(model.show())

    async def ps(request: Request) -> Response:
        check_key(request)
        return JSONResponse({"models": [model.running()]})

    async def version(request: Request) -> Response:
        return JSONResponse({"version": o.VERSION})

    async def manage(request: Request) -> Response:
        check_key(request)
        if request.url.path.startswith("/api/embed"):
            raise ApiError(501, "this server does not compute embeddings")
        raise ApiError(
            501,
            f"edgechat serve runs the one model it loaded ({model.name}); models are pulled "
            "with `edgechat models pull` and served with `edgechat serve --model ID`",
        )

    async def root(request: Request) -> Response:
        return PlainTextResponse("Ollama is running (edgechat serve, an Ollama-compatible API)")

    return [
        Route("/", root, methods=["GET", "HEAD"]),
        Route("/api/version", version, methods=["GET"]),
        Route("/api/tags", tags, methods=["GET"]),
        Route("/api/ps", ps, methods=["GET"]),
        Route("/api/show", show, methods=["POST"]),
        Route("/api/chat", chat, methods=["POST"]),
        Route("/api/generate", generate, methods=["POST"]),
        *(
            Route(f"/api/{what}", manage, methods=["POST", "DELETE"])
            for what in ("pull", "push", "create", "copy", "delete", "embed", "embeddings")
        ),
    ]
