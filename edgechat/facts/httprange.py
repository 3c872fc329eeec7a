"""A remote file read through HTTP range requests: a GGUF's header without the weights."""

from __future__ import annotations

import io
from collections.abc import Callable

from edgechat.facts.gguf import GGUFError


class HttpRangeFile(io.RawIOBase):
    """Read a remote file sequentially through HTTP range requests, a chunk at a time."""

    def __init__(self, url: str, headers: dict | None = None, opener: Callable | None = None):
        import urllib.request

        self.url = url
        self.headers = dict(headers or {})
        self.pos = 0
        self.size: int | None = None
        self._open = opener or urllib.request.urlopen
        self.requests = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        import urllib.error
        import urllib.request

        if self.size is not None and self.pos >= self.size:
            return 0
        want = len(buf)
        req = urllib.request.Request(
            self.url,
            headers={**self.headers, "Range": f"bytes={self.pos}-{self.pos + want - 1}"},
        )
        try:
            with self._open(req, timeout=30) as resp:
                if resp.status != 206 and self.pos > 0:
                    # A 200 resends the file from its start: reading on would parse garbage.
                    raise GGUFError(f"{self.url}: the server does not support range requests")
                data = resp.read(want)
                rng = resp.headers.get("Content-Range", "")
        except urllib.error.HTTPError as exc:
            if exc.code == 416:
                return 0
            raise GGUFError(f"{self.url}: the server answered {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise GGUFError(f"cannot reach {self.url}: {reason}") from None
        self.requests += 1
        if "/" in rng and rng.rsplit("/", 1)[1].isdigit():
            self.size = int(rng.rsplit("/", 1)[1])
        n = min(len(buf), len(data))
        buf[:n] = data[:n]
        self.pos += n
        return n
