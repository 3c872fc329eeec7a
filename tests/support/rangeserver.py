"""A loopback HTTP server that serves files with Range support, as a CDN or the hub does."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class RangeServer:
    def __init__(self, files: dict[str, Path], ranges: bool = True) -> None:
        self.files = files
        self.ranges = ranges
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                path = server.files.get(self.path)
                if path is None:
                    self.send_error(404, "Not Found")
                    return
                size = path.stat().st_size
                start, end = 0, size - 1
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes=") and server.ranges:
                    a, _, b = rng[6:].partition("-")
                    start = int(a)
                    end = min(int(b) if b else size - 1, size - 1)
                    if start >= size:
                        self.send_error(416, "Range Not Satisfiable")
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(end - start + 1))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                with path.open("rb") as fh:
                    fh.seek(start)
                    self.wfile.write(fh.read(end - start + 1))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(  # polled often: shutdown() waits a whole poll
            target=self.httpd.serve_forever, args=(0.02,), daemon=True
        )

    def __enter__(self) -> RangeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
