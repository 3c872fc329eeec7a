"""Embeddings through both APIs: OpenAI's ``/v1/embeddings`` and Ollama's ``/api/embed``
(and its older ``/api/embeddings``), computed on the llama thread with the loaded model
(llama/embed.py: llama-server's way, a context of its own in embeddings mode)."""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from edgechat.planning.plan import Sampling
from edgechat.serve.protocol import ApiError
from edgechat.serve.streams import Courier, read_json, run_job
from edgechat.serve.worker import Job, LlamaWorker

MAX_INPUTS = 256  # texts in one request


def texts_of(value, name: str = "input") -> list[str]:
    """A request's input: one text or a list of texts (not tokens: give the text)."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(x, str) for x in texts):
        raise ApiError(400, f"{name} must be a text or a list of texts", "invalid_value", name)
    if len(texts) > MAX_INPUTS:
        raise ApiError(400, f"{name} holds over {MAX_INPUTS} texts; send fewer at a time")
    return texts


async def compute(
    request: Request, worker: LlamaWorker, courier: Courier, texts: list[str], **job_args
) -> tuple[list[list[float]], int, float]:
    """(one vector a text, tokens read, seconds) from the llama thread."""
    events = courier.events()
    job = Job(Sampling(), events.emit, embed=texts, **job_args)
    t0 = time.perf_counter()

    async def reply():
        event = await events.get()
        if event[0] == "error":
            raise event[1]
        return event

    _, vectors, n = await run_job(request, worker, job, events, reply)
    return vectors, n, time.perf_counter() - t0


def openai_route(worker, courier, model_id: str, check: Callable) -> Callable:
    async def embeddings(request: Request) -> Response:
        body = await read_json(request)
        check(request, body.get("model"))
        texts = texts_of(body.get("input"))
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise ApiError(400, "encoding_format must be float or base64", "invalid_value")
        vectors, n, _ = await compute(request, worker, courier, texts, truncate=False)
        data = [
            {"object": "embedding", "index": i, "embedding": _encoded(v, fmt)}
            for i, v in enumerate(vectors)
        ]
        use = {"prompt_tokens": n, "total_tokens": n}
        return JSONResponse({"object": "list", "data": data, "model": model_id, "usage": use})

    return embeddings


def _encoded(vector: list[float], fmt: str):
    if fmt == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def ollama_routes(worker, courier, parse: Callable, keep_alive: Callable) -> list:
    async def embed(request: Request) -> Response:
        body = await parse(request)
        texts = texts_of(body.get("input"))
        truncate = body.get("truncate", True) is not False
        vectors, n, took = await compute(
            request, worker, courier, texts, truncate=truncate, keep_alive=keep_alive(body)
        )
        ns = int(took * 1e9)
        return JSONResponse(
            {
                "model": body["model"],
                "embeddings": vectors,
                "total_duration": ns,
                "load_duration": 0,
                "prompt_eval_count": n,
            }
        )

    async def legacy(request: Request) -> Response:
        body = await parse(request)
        text = texts_of(body.get("prompt"), "prompt")
        (vector,), _, _ = await compute(request, worker, courier, text, keep_alive=keep_alive(body))
        return JSONResponse({"embedding": vector})

    return [("/api/embed", embed), ("/api/embeddings", legacy)]
