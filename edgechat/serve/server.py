"""Run the server: bind the socket ourselves (a taken port is one clear line), hand it
to uvicorn, and make Ctrl-C stop generation at once before uvicorn's graceful exit."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

from edgechat.errors import EdgechatError
from edgechat.serve.app import ServeConfig, build_app
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

    import copy

    from uvicorn.config import LOGGING_CONFIG

    logs = copy.deepcopy(LOGGING_CONFIG)
    logs["handlers"]["access"]["stream"] = "ext://sys.stderr"  # one log, on stderr
    uconfig = uvicorn.Config(
        build_app(worker, config),
        log_level="info",
        log_config=logs,
        access_log=access_log,
        lifespan="off",
        timeout_graceful_shutdown=5,
        server_header=False,
    )
    Server(uconfig).run(sockets=[sock])
