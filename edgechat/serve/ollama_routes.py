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
from edgechat.serve import embeddings, structured
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
    limit = model.context_length, model.trained_context

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
        return req

    def loaded(req, chat: bool) -> Response:
        """An empty request loads the model (or, with keep_alive 0, unloads it)."""
        worker.keep(req.keep_seconds, load=not req.unloads)
        base = {"model": req.model, "created_at": o.stamp()}
        base |= {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
        reason = "unload" if req.unloads else "load"
        return JSONResponse({**base, "done": True, "done_reason": reason})

    async def answer(
        request: Request, req, job: Job, events: Events, chat: bool, plan: structured.Plan
    ) -> Response:
        reader = plan.reader()

        def base(text: str, calls=None, thinking: str = "") -> dict:
            if chat:
                return o.chat_chunk(req.model, text, calls, thinking)
            out = o.generate_chunk(req.model, text)
            return {**out, "thinking": thinking} if thinking else out

        def last(finish: str, stats, text: str, calls=None, thinking: str = "") -> dict:
            out = o.final(base(text, calls, thinking), finish, stats, job.t_request)
            if job.want_context and job.context is not None:
                out["context"] = job.context
            return out

        def pieces(found) -> bytes:
            out = b""
            for kind, value in found:
                if kind == "call":
                    out += _line(base("", [value]))
                else:
                    out += _line(base(value) if kind == "text" else base("", None, value))
            return out

        async def lines() -> AsyncIterator[bytes]:
            try:
                while True:
                    batch = await events.batch()
                    out = b"".join(pieces(reader.feed(e[1])) for e in batch if e[0] == "text")
                    if out:
                        yield out
                    event = batch[-1]
                    if event[0] == "text":
                        continue
                    if event[0] == "error":
                        yield _line(o.error_body(event[1]))
                    else:  # "cancelled" reaches a client only when the server cut its reply
                        # (Ctrl-C): its last object says so
                        yield pieces(reader.end()) + _line(last(event[1], event[2], ""))
                    return
            finally:
                worker.cancel(job)

        async def reply() -> Response:
            if req.stream:
                return JobStream(worker, job, lines(), media_type="application/x-ndjson")
            text, finish, stats = await collect(events)
            thinking, text, calls = structured.read_whole(reader, text)
            return JSONResponse(last(finish, stats, text, calls, thinking))

        return await run_job(request, worker, job, events, reply)

    def planned(req, messages: list[dict], sampling, tools=None) -> structured.Plan:
        return structured.plan(
            worker.info,
            model.name,
            messages,
            sampling,
            schema=req.schema(),
            tools=tools,
            choice=(req.model_extra or {}).get("tool_choice"),  # not Ollama's: honoured
            think=req.think,
        )

    async def chat(request: Request) -> Response:
        req = await parse(request, o.ChatRequest)
        if not req.messages:
            return loaded(req, chat=True)
        sampling, n_ctx, stops = o.sampling(req.options, defaults, *limit)
        events = courier.events()
        messages = structured.template_messages([m.as_engine() for m in req.messages])
        plan = planned(req, messages, sampling, req.tools)
        # Ollama's rule: the oldest turns make way when a chat outgrows the context.
        job = Job(
            plan.sampling,
            events.emit,
            plan.messages,
            stops=stops,
            drop_oldest=True,
            n_ctx=n_ctx,
            keep_alive=req.keep_seconds,
            owner=owner_of(request, req),
            **plan.job_args(),
        )
        return await answer(request, req, job, events, True, plan)

    async def generate(request: Request) -> Response:
        req = await parse(request, o.GenerateRequest)
        if not req.prompt and not req.context:
            return loaded(req, chat=False)
        sampling, n_ctx, stops = o.sampling(req.options, defaults, *limit)
        events = courier.events()
        keep = req.keep_seconds
        owner = owner_of(request, req)
        if req.raw:
            if req.format or req.think:
                raise ApiError(400, "raw prompts take no format or think: the template is off")
            plan = structured.Plan([], sampling)
            job = Job(
                sampling, events.emit, prompt=req.prompt, stops=stops, n_ctx=n_ctx, owner=owner
            )
            job.keep_alive = keep
        else:
            plan = planned(req, req.messages(), sampling)
            job = Job(
                plan.sampling,
                events.emit,
                plan.messages,
                stops=stops,
                prefix=list(req.context or []),
                n_ctx=n_ctx,
                want_context=True,
                keep_alive=keep,
                owner=owner,
                **plan.job_args(),
            )
        return await answer(request, req, job, events, False, plan)

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
        state = worker.status()
        # Beside Ollama's fields, the threads it runs on now.
        running = [{**model.running(state["expires_at"]), "threads": state["threads"]}]
        return JSONResponse({"models": running if state["loaded"] else []})

    async def version(request: Request) -> Response:
        return JSONResponse({"version": o.VERSION})

    async def pull(request: Request) -> Response:
        """Home Assistant and `ollama run` pull before they chat: the model this server
        has is there already; any other is refused with what to do."""
        check_key(request)
        body = await read_json(request)
        name = body.get("model") or body.get("name")
        if name not in names:
            raise ApiError(
                404,
                f'model "{name}" is not on this server, which serves "{model.name}" only; '
                "models are pulled with `edgechat models pull` and served with "
                "`edgechat serve --model ID`",
            )
        steps = [{"status": "pulling manifest"}, {"status": "success"}]
        if body.get("stream") is False:
            return JSONResponse(steps[-1])
        return Response(b"".join(_line(s) for s in steps), media_type="application/x-ndjson")

    async def embed_body(request: Request) -> dict:
        check_key(request)
        body = await read_json(request)
        name = body.get("model")
        if name not in names:
            raise ApiError(404, f'model "{name}" not found; this server has "{model.name}"')
        return body

    def body_keep(body: dict) -> float | None:
        return o.keep_seconds(body.get("keep_alive"))

    async def manage(request: Request) -> Response:
        check_key(request)
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
        Route("/api/pull", pull, methods=["POST"]),
        *(
            Route(path, handler, methods=["POST"])
            for path, handler in embeddings.ollama_routes(worker, courier, embed_body, body_keep)
        ),
        *(
            Route(f"/api/{what}", manage, methods=["POST", "DELETE"])
            for what in ("push", "create", "copy", "delete")
        ),
    ]
