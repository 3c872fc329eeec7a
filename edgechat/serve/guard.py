"""Limits on what a connection may hold: a request's head must arrive whole within
``HEAD_S`` and ``HEAD_BYTES``, its body within ``BODY_S``; uvicorn's own limits (idle
keep-alive connections, ``limit_concurrency``) are set in server.py.

uvicorn times out only idle kept-alive connections: a client that sends half a request
line, or a body a byte a minute, held its connection (and a place in the count of open
ones) forever, so 200 such clients could shut everyone else out. The head's limits live
in the HTTP protocol (``guarded``), the only place that sees a request before its head
is whole; the body's in an ASGI middleware (``BodyDeadline``) around ``receive``.
"""

from __future__ import annotations

import asyncio

HEAD_S = 10.0  # for the request line and headers, from their first byte (or the connection)
HEAD_BYTES = 64 * 1024  # the request line and headers together
BODY_S = 60.0  # for the whole body, from when the head was read


class SlowBody(Exception):
    """The body did not arrive within BODY_S."""


def guarded(base: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class ``base`` (h11's or httptools'), closing a connection
    whose next request's head is not whole within HEAD_S or HEAD_BYTES. Both classes
    keep the request being answered as ``cycle``; before its head is whole, it is the
    one before (answered) or None."""

    class Guarded(base):  # type: ignore[misc, valid-type]
        _timer: asyncio.TimerHandle | None = None
        _head = 0  # bytes of the head so far

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            # uvicorn's own cap answers a bare "Service Unavailable": this one, in the
            # shape of the API asked (the same count, made as the request starts).
            cap, self.limit_concurrency = self.limit_concurrency, None
            if cap is not None:
                self.app = _capped(self.app, self.connections, self.tasks, cap, self.logger)

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._waiting():
                self._arm()
                self._head += len(data)
            super().data_received(data)
            if not self._waiting():  # the head is whole: the app has the request
                self._disarm()
            elif self._head > HEAD_BYTES and not self.transport.is_closing():
                self.transport.write(_refusal(431, "Request Header Fields Too Large"))
                self.transport.close()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _waiting(self) -> bool:
            cycle = self.cycle
            return cycle is None or cycle.response_complete

        def _arm(self) -> None:
            if self._timer is None:
                self._head = 0
                self._timer = self.loop.call_later(HEAD_S, self._expire)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expire(self) -> None:
            self._timer = None
            if not self._waiting() or self.transport.is_closing():
                return
            if self._head:  # part of a request came: say why it ends
                self.transport.write(_refusal(408, "Request Timeout"))
            self.transport.close()

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded


def _capped(app, connections: set, tasks: set, cap: int, logger):
    """``app`` behind the cap on open connections and requests in progress."""

    async def capped(scope, receive, send) -> None:
        # The request's own task is already counted among ``tasks`` here.
        if scope["type"] == "http" and (len(connections) >= cap or len(tasks) > cap):
            logger.warning("Exceeded concurrency limit.")
            await _busy(scope, send)
            return
        await app(scope, receive, send)

    return capped


async def _busy(scope, send) -> None:
    import json

    from edgechat.serve.app import _ollama_path
    from edgechat.serve.protocol import ApiError

    message = "the server holds as many connections as it takes: try again shortly"
    err = ApiError(503, message, "server_busy")
    body = {"error": err.message} if _ollama_path(scope.get("path", "")) else err.body()
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    headers += [(b"connection", b"close"), (b"retry-after", b"1")]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": data, "more_body": False})


def _refusal(status: int, reason: str) -> bytes:
    body = f"{reason}: the request did not arrive in time or in size\n".encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class BodyDeadline:
    """ASGI middleware: a request's body must arrive within BODY_S, or ``receive`` raises
    SlowBody (the route answers 408). Once the body is in, ``receive`` is left alone: it
    then waits for the client to leave, however long a reply takes."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        end = loop.time() + BODY_S
        done = False

        async def timed():
            nonlocal done
            if done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, end - loop.time()))
            except asyncio.TimeoutError:
                raise SlowBody from None
            done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed, send)
