"""Run the server: bind the socket ourselves (a taken port is one clear line), hand it
to uvicorn, and make Ctrl-C stop generation at once before uvicorn's graceful exit."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

from edgechat.errors import EdgechatError
from edgechat.serve.app import ServeConfig, build_app
from edgechat.serve.guard import guarded
from edgechat.serve.worker import LlamaWorker


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name that may resolve to anything: treat it as the network


def bind(host: str, port: int) -> socket.socket:
    host = host.strip("[]")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server((host, port), family=family)
    except socket.gaierror:
        raise EdgechatError(f"cannot resolve the host {host!r}; give an IP address") from None
    except OSError as exc:
        why = "the port is taken" if exc.errno == 98 else (exc.strerror or str(exc))
        raise EdgechatError(
            f"cannot listen on {host}:{port}: {why}; choose another --port or --host"
        ) from None
    sock.set_inheritable(True)
    return sock


KEEP_ALIVE_S = 5  # an idle kept-alive connection closes after this (uvicorn's default)


def connections(worker: LlamaWorker) -> int:
    """Open connections (and requests in progress) at most: every slot and every place
    in the queue, with room for kept-alive clients, /health and the like; beyond it,
    uvicorn answers 503 at once instead of holding more sockets."""
    return min(1024, max(64, 2 * (worker.slots + worker.queue_size) + 16))


def uvicorn_config(worker: LlamaWorker, config: ServeConfig, access_log: bool = True, **more):
    """uvicorn's settings for the server: its limits (guard.py, ``connections``) and one
    log on stderr. ``more``: further settings (a test's smaller limits)."""
    import copy

    import uvicorn
    from uvicorn.config import LOGGING_CONFIG
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    logs = copy.deepcopy(LOGGING_CONFIG)
    logs["handlers"]["access"]["stream"] = "ext://sys.stderr"  # one log, on stderr
    settings = {
        "http": guarded(AutoHTTPProtocol),  # a request's head in time and in size
        "log_level": "info",
        "log_config": logs,
        "access_log": access_log,
        "lifespan": "off",
        "timeout_graceful_shutdown": 5,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "limit_concurrency": connections(worker),
        "proxy_headers": False,  # a client's address is its own: caches are kept apart by it
        "server_header": False,
    }
    return uvicorn.Config(build_app(worker, config), **(settings | more))


def run(
    worker: LlamaWorker,
    config: ServeConfig,
    sock: socket.socket,
    on_ready: Callable[[], None] | None = None,
    access_log: bool = True,
) -> None:
    """Serve until Ctrl-C (or SIGTERM). uvicorn re-raises the signal when it is done."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            worker.interrupt()  # end the reply being written and refuse what waits
            super().handle_exit(sig, frame)

        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if on_ready is not None and self.started:
                on_ready()

    Server(uvicorn_config(worker, config, access_log)).run(sockets=[sock])
