"""A loopback Hugging Face hub: the parts of its protocol huggingface_hub speaks to pull a file.

- ``GET /api/models/{owner}/{name}[/revision/{rev}]?blobs=true``: model info with
  siblings, their sizes and LFS hashes (401 + ``X-Error-Code: GatedRepo`` when gated);
- ``HEAD|GET /{owner}/{name}/resolve/{rev}/{file}``: ``ETag``, ``X-Repo-Commit``,
  ``X-Linked-Etag``, ``X-Linked-Size`` and a 302 to a second loopback host (the CDN);
- the CDN serves the bytes with ``Range`` support, and can misbehave on purpose:
  drop the connection part-way once, corrupt a byte, or go slowly.

A hostile hub for the security tests: every field below can be set to lie (a commit,
digest or ETag shaped like a path, an API answering HTML or JSON of the wrong shape,
any HTTP status, a CDN that refuses ranges with 416, trickles one byte at a time, or
serves a web page).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that hung up on purpose (a refused pull) is not news


class Hub:
    def __init__(self, repos: dict[str, dict[str, Path | bytes]], gated: set[str] = frozenset()):
        self.files: dict[str, dict[str, bytes]] = {
            repo: {
                name: (v.read_bytes() if isinstance(v, Path) else v) for name, v in files.items()
            }
            for repo, files in repos.items()
        }
        self.blobs = {
            hashlib.sha256(data).hexdigest(): data
            for files in self.files.values()
            for data in files.values()
        }
        self.gated = set(gated)
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range)
        self.drop_after: int | None = None  # CDN: close the connection after this many bytes, once
        self.corrupt = False  # CDN: flip one byte of every body
        self.chunk_delay = 0.0  # CDN: seconds between 64 KiB chunks
        self.claimed_size: int | None = None  # hub: lie about sizes (the disk precheck)
        self.tokens: set[str] | None = None  # hub: the tokens it accepts (None: any)
        self.commit = COMMIT  # hub: the commit id it reports
        self.listed_sha: str | None = None  # hub: the LFS sha256 in the listing
        self.linked_etag: str | None = None  # hub: X-Linked-Etag on resolve
        self.served_size: int | None = None  # hub: X-Linked-Size on resolve
        self.api_status: int | None = None  # hub: answer the listing with this status
        self.api_body: bytes | None = None  # hub: answer the listing with these bytes
        self.resolve_status: int | None = None  # hub: answer resolve with this status
        self.cdn_status: int | None = None  # CDN: answer with this status
        self.cdn_416_on_range = False  # CDN: refuse every Range request with 416
        self.cdn_type = "application/octet-stream"  # CDN: Content-Type of the body
        self.trickle: float | None = None  # CDN: seconds between single bytes
        self.hub = _Server(("127.0.0.1", 0), self._hub_handler())
        self.cdn = _Server(("127.0.0.1", 0), self._cdn_handler())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.hub.server_address[1]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self.cdn.server_address[1]}"

    def __enter__(self) -> Hub:
        for server in (self.hub, self.cdn):
            # Polled often: shutdown() waits a whole poll (0.5 s by default) per server.
            threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        for server in (self.hub, self.cdn):
            server.shutdown()
            server.server_close()

    # -- the hub ------------------------------------------------------------------------

    def _size(self, data: bytes) -> int:
        return self.claimed_size if self.claimed_size is not None else len(data)

    def _hub_handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _token(self) -> str | None:
                auth = self.headers.get("Authorization") or ""
                return auth.removeprefix("Bearer ").strip() or None

            def _bad_token(self) -> bool:
                """A token the hub does not know: 401, as huggingface.co answers."""
                token = self._token()
                if token is None or hub.tokens is None or token in hub.tokens:
                    return False
                self._send(
                    401,
                    b'{"error": "Invalid credentials in Authorization header"}',
                    {
                        "X-Error-Message": "Invalid credentials in Authorization header",
                        "Content-Type": "application/json",
                    },
                )
                return True

            def _refuse(self, repo: str) -> bool:
                if self._bad_token():
                    return True
                if repo in hub.gated and "authorization" not in {k.lower() for k in self.headers}:
                    self._send(
                        401,
                        b'{"error": "gated"}',
                        {
                            "X-Error-Code": "GatedRepo",
                            "X-Error-Message": f"Access to model {repo} is restricted.",
                            "Content-Type": "application/json",
                        },
                    )
                    return True
                if repo not in hub.files:
                    self._send(
                        404,
                        b'{"error": "Repository not found"}',
                        {
                            "X-Error-Code": "RepoNotFound",
                            "Content-Type": "application/json",
                        },
                    )
                    return True
                return False

            def _send(self, status: int, body: bytes, headers: dict, head: bool = False):
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _route(self, head: bool) -> None:
                path = self.path.split("?")[0]
                hub.requests.append((self.command, path, self.headers.get("Range")))
                parts = path.strip("/").split("/")
                if parts == ["api", "whoami-v2"]:
                    if self._bad_token():
                        return
                    if self._token() is None:
                        self._send(401, b'{"error": "no token"}', {}, head)
                        return
                    body = {"type": "user", "name": "tester", "auth": {"type": "access_token"}}
                    self._send(200, json.dumps(body).encode(), {}, head)
                    return
                if parts[:2] == ["api", "models"] and len(parts) >= 4:
                    repo = "/".join(parts[2:4])
                    if hub.api_status:
                        self._send(hub.api_status, b'{"error": "no"}', {}, head)
                        return
                    if hub.api_body is not None:
                        self._send(200, hub.api_body, {"Content-Type": "application/json"}, head)
                        return
                    if self._refuse(repo):
                        return
                    siblings = [
                        {
                            "rfilename": name,
                            "size": hub._size(data),
                            "blobId": hashlib.sha1(data).hexdigest(),
                            "lfs": None
                            if hub.listed_sha == ""
                            else {
                                "size": hub._size(data),
                                "sha256": hub.listed_sha or hashlib.sha256(data).hexdigest(),
                                "pointerSize": 134,
                            },
                        }
                        for name, data in hub.files[repo].items()
                    ]
                    body = json.dumps(
                        {
                            "id": repo,
                            "modelId": repo,
                            "sha": hub.commit,
                            "private": False,
                            "gated": repo in hub.gated and "manual",
                            "siblings": siblings,
                        }
                    ).encode()
                    self._send(200, body, {"Content-Type": "application/json"}, head)
                    return
                if len(parts) >= 5 and parts[2] == "resolve":
                    repo, name = "/".join(parts[:2]), "/".join(parts[4:])
                    if hub.resolve_status:
                        self._send(hub.resolve_status, b"", {}, head)
                        return
                    if self._refuse(repo):
                        return
                    data = hub.files[repo].get(name)
                    if data is None:
                        self._send(404, b"", {"X-Error-Code": "EntryNotFound"}, head)
                        return
                    sha = hashlib.sha256(data).hexdigest()
                    self._send(
                        302,
                        b"",
                        {
                            "Location": f"{hub.cdn_url}/blobs/{sha}",
                            "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                            "X-Repo-Commit": hub.commit,
                            "X-Linked-Etag": f'"{hub.linked_etag or sha}"',
                            "X-Linked-Size": str(hub.served_size or hub._size(data)),
                        },
                        head,
                    )
                    return
                self._send(404, b"", {}, head)

            def do_HEAD(self):
                self._route(head=True)

            def do_GET(self):
                self._route(head=False)

        return Handler

    # -- the CDN ------------------------------------------------------------------------

    def _cdn_handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                hub.requests.append(("GET", self.path, rng))
                data = hub.blobs.get(self.path.rsplit("/", 1)[-1])
                status = hub.cdn_status or (416 if rng and hub.cdn_416_on_range else None)
                if data is None or status:
                    body = b"<html><body>Error</body></html>"
                    self.send_response(status or 404)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if hub.corrupt:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                start = 0
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", hub.cdn_type)
                self.end_headers()
                drop, hub.drop_after = hub.drop_after, None
                sent = 0
                try:
                    if hub.trickle:
                        for i in range(len(body)):
                            self.wfile.write(body[i : i + 1])
                            self.wfile.flush()
                            time.sleep(hub.trickle)
                        return
                    for i in range(0, len(body), 64 * 1024):
                        chunk = body[i : i + 64 * 1024]
                        if drop is not None and sent + len(chunk) > drop:
                            self.wfile.write(chunk[: drop - sent])
                            self.wfile.flush()
                            self.close_connection = True
                            self.connection.shutdown(2)
                            return
                        self.wfile.write(chunk)
                        sent += len(chunk)
                        if hub.chunk_delay:
                            time.sleep(hub.chunk_delay)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler


if __name__ == "__main__":
    # Serve the starter model as the hub would, for trying `edgechat models pull` by hand:
    #   python tests/hubserver.py   then, in another shell, the export line it prints.
    from edgechat.models.registry import starter_model_path

    repo = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
    with Hub({repo: {"smollm2-135m-instruct-q4_1.gguf": starter_model_path()}}) as server:
        print(f"export HF_ENDPOINT={server.url}", flush=True)
        print("edgechat models pull smollm2-135m-instruct:Q4_1", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
