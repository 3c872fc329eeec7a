"""How edgechat talks to a server it was pointed at: a stranger.

One policy for every request of the remote engines (OpenAI's API and Ollama's, through
their official clients, and the probe that tells them apart), in one ``httpx.Client``:

- no redirect is followed: a 3xx would carry the API key and the conversation to
  whatever host it names, so the request stops and the error says where it pointed
  (the privacy notice then names the only host that ever gets the text);
- a server that stalls is stopped by a read timeout of ``READ_TIMEOUT_S`` seconds
  between bytes (not the clients' 600 s), and one that never ends by a cap on a
  reply's bytes (``MAX_BODY``) and on a line's (``MAX_LINE``: no JSON line of a reply is
  near it);
- a web page (an HTML 200) is not an API's answer;
- an address is checked before anything is sent (``check_url``): a scheme, a host
  name or IP, a port in range, no user name or password in it.

Whatever a server sends that is not a reply becomes ``BadReply``: one line, never a
traceback, its text cut short and its terminal escapes neutralised.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from urllib.parse import urlsplit

from edgechat.errors import EdgechatError
from edgechat.limits import MAX_CTX

READ_TIMEOUT_S = 60.0  # between two bytes of a reply (a first token may take a while)
CONNECT_TIMEOUT_S = 10.0
MAX_LINE = 1 << 20  # bytes without a newline
MAX_BODY = 64 << 20  # bytes in one reply
_HOST = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?$")
_EXAMPLE = "give one like http://HOST:8080/v1 (OpenAI's API) or http://HOST:11434 (Ollama)"


class BadReply(EdgechatError):
    """The server answered with something that is not its API's reply."""


class ReplyCut(EdgechatError):
    """The reply stopped before its end: what came is partial."""


def check_url(url: str) -> tuple[str, str, str]:
    """(scheme, host[:port], path) of a server address, or an EdgechatError saying why
    it is not one. ``HOST:PORT`` alone means http."""
    text = url.strip() if isinstance(url, str) else ""
    if not text or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise EdgechatError(f"{shown(url)} is not a server address; {_EXAMPLE}")
    try:
        parts = urlsplit(text if "://" in text else f"http://{text}")
        port = parts.port  # ValueError: not a number, or out of range
        host = parts.hostname
    except ValueError as exc:
        raise EdgechatError(f"{shown(url)} is not a server address ({exc}); {_EXAMPLE}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise EdgechatError(f"{shown(url)} is not a server address; {_EXAMPLE}")
    if parts.username is not None or parts.password is not None:
        raise EdgechatError(
            f"put no user name or password in the address {shown(url)}: give the server's "
            "key with --api-key or EDGECHAT_API_KEY"
        )
    if parts.query or parts.fragment:
        raise EdgechatError(f"{shown(url)} holds a query or fragment; {_EXAMPLE}")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is None and not _HOST.match(host):
        raise EdgechatError(f"{shown(url)}: {shown(host)} is not a host name; {_EXAMPLE}")
    name = f"[{host}]" if ip is not None and ip.version == 6 else host
    where = f"{name}:{port}" if port is not None else name
    return parts.scheme, where, parts.path.rstrip("/")


def shown(text, width: int = 200) -> str:
    """Text that came from a server (or a user), for one line: control characters and
    terminal escapes neutralised, cut short."""
    from edgechat.text import clean

    value = clean(text if isinstance(text, str) else repr(text))
    return value if len(value) <= width else value[: width - 1] + "…"


def positive_int(value, high: int = MAX_CTX) -> int | None:
    """A count a server sent (a context size, a token count), or None when it is not a
    whole number in 1..high: ``"abc"``, ``-5``, ``1e400``, ``true`` are not."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and 0 < value <= high else None


def options(where: str, api_key: str | None = None, read_timeout: float | None = None) -> dict:
    """The ``httpx.Client`` settings of every remote request (the policy above); the
    official clients take them (Ollama's passes them on to httpx)."""

    def refuse(response) -> None:
        if response.is_redirect:
            to = response.headers.get("location", "")
            raise BadReply(
                f"the server at {where} sends the request on to {shown(to)}; edgechat "
                "follows no redirect (it would carry your text"
                + (" and key" if api_key else "")
                + " there): give that address with --remote if you trust it"
            )
        kind = response.headers.get("content-type", "").lower()
        if response.status_code < 300 and kind.startswith(("text/html", "application/xhtml")):
            raise BadReply(
                f"the server at {where} answered with a web page, not its API: is it the "
                f"API's address? {_EXAMPLE}"
            )

    headers = {"Accept-Encoding": "identity"}  # the byte caps count what is read
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return {
        "follow_redirects": False,
        "timeout": timeout(read_timeout),
        "headers": headers,
        "event_hooks": {"response": [refuse]},
        "transport": _capped()(where),
    }


def client(where: str, api_key: str | None = None):
    """An ``httpx.Client`` with the policy above."""
    import httpx

    return httpx.Client(**options(where, api_key))


def timeout(read: float | None = None):
    import httpx

    return httpx.Timeout(READ_TIMEOUT_S if read is None else read, connect=CONNECT_TIMEOUT_S)


def explain(exc: BaseException, where: str) -> EdgechatError | None:
    """One line for a failure of the network or of the server's text, or None when
    ``exc`` is none of those (the caller's API error, to explain in its own words)."""
    import httpx

    for cause in _chain(exc):
        if isinstance(cause, EdgechatError):
            return cause
        if isinstance(cause, httpx.TimeoutException):
            return EdgechatError(
                f"the server at {where} sent nothing for {READ_TIMEOUT_S:.0f} s: stopped "
                "waiting (is it overloaded, or stuck?)"
            )
        if isinstance(cause, (httpx.ConnectError, ConnectionError)):
            return EdgechatError(
                f"cannot reach {where}: is the server running and the address right?"
            )
        if isinstance(cause, httpx.HTTPError):
            return EdgechatError(
                f"the connection to {where} failed: {shown(str(cause) or type(cause).__name__)}"
            )
        if isinstance(cause, (ValueError, TypeError, AttributeError, KeyError, RecursionError)):
            return BadReply(
                f"the server at {where} sent something that is not its API's reply "
                f"({shown(str(cause) or type(cause).__name__, 120)})"
            )
    return None


def _chain(exc: BaseException | None):
    """``exc`` and what caused it (not what it was raised while handling, if it said so)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


@functools.cache
def _capped():
    """The capped transport's classes (httpx is imported only when a remote is used)."""
    import httpx

    class CappedStream(httpx.SyncByteStream):
        def __init__(self, inner, where: str) -> None:
            self.inner, self.where = inner, where

        def __iter__(self):
            total = line = 0
            for chunk in self.inner:
                total += len(chunk)
                cut = chunk.rfind(b"\n")
                line = len(chunk) - cut - 1 if cut >= 0 else line + len(chunk)
                if total > MAX_BODY:
                    raise BadReply(f"the server at {self.where} sent over {MAX_BODY >> 20} MiB")
                if line > MAX_LINE:
                    raise BadReply(
                        f"the server at {self.where} sent a line of over {MAX_LINE >> 20} MiB, "
                        "longer than any reply's: stopped"
                    )
                yield chunk

        def close(self) -> None:
            self.inner.close()

    class Capped(httpx.BaseTransport):
        """Replies stop at ``MAX_BODY`` bytes, or at a line of ``MAX_LINE``."""

        def __init__(self, where: str) -> None:
            self.inner, self.where = httpx.HTTPTransport(retries=0), where

        def handle_request(self, request):
            response = self.inner.handle_request(request)
            response.stream = CappedStream(response.stream, self.where)
            return response

        def close(self) -> None:
            self.inner.close()

    return Capped
