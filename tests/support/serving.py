"""Start real servers in child processes for the serve and remote tests: `edgechat serve`
and llama-cpp-python's own `python -m llama_cpp.server`, both on loopback."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from support.cli import child_env


class Server:
    """A child process serving HTTP; ``log`` collects everything it wrote to stderr."""

    def __init__(self, args: list[str], env: dict | None = None) -> None:
        self.env = child_env({"PYTHONFAULTHANDLER": "1", **(env or {})})  # stacks on a hang
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = ""

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    @property
    def base(self) -> str:
        """The server's root, where edgechat serve answers Ollama's API."""
        return self.url.removesuffix("/v1")

    def wait_for_line(self, pattern: str, timeout: float = 90) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                found = re.search(pattern, line)
                if found:
                    return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"the server did not start:\n{self.log}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._dump_and_kill()
                raise AssertionError(
                    f"the server did not stop within {timeout} s of {signal.Signals(sig).name};"
                    f" what it and its runner were doing (faulthandler):\n{self.log[-8000:]}"
                    f"{self._crash_log()}"
                ) from None
        self._reader.join(5)
        return self.proc.returncode

    def _dump_and_kill(self) -> None:
        """Every thread's stack of the server and its runner into the log (SIGABRT, with
        PYTHONFAULTHANDLER set), then an end: a hang says where it hung."""
        import psutil

        procs = [psutil.Process(self.proc.pid)]
        with contextlib.suppress(psutil.Error):
            procs += procs[0].children(recursive=True)
        for p in procs:  # at once: each as it was (a runner's stderr is the server's)
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGABRT)
        _, alive = psutil.wait_procs(procs, timeout=5)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        self.proc.wait()
        self._reader.join(5)

    def _crash_log(self) -> str:
        """The supervised server's stacks: `edgechat` writes them to its crash log
        (cli/supervise.py), named for the supervisor's process."""
        home = self.env.get("EDGECHAT_HOME")
        log = Path(home) / "cache" / f"crash-{self.proc.pid}.log" if home else None
        if log is None or not log.is_file():
            return ""
        return f"\nthe server's own (its crash log):\n{log.read_text(errors='replace')[-8000:]}"


@contextlib.contextmanager
def served(model: Path, home: Path, *extra: str) -> Iterator[Server]:
    """`edgechat serve` for a module's tests, with a home of its own (``new_home``, which
    holds the run's CPU kernels verdict); on leaving, it must stop cleanly, having logged
    no traceback."""
    srv = edgechat_serve(model, *extra, env={"EDGECHAT_HOME": str(home)})
    yield srv
    assert srv.stop() in (0, 130)
    assert "Traceback" not in srv.log


def edgechat_serve(model: Path, *extra: str, env: dict | None = None) -> Server:
    """`edgechat serve` on a free port; ``url`` is its /v1 address once it listens."""
    server = Server(
        [sys.executable, "-m", "edgechat", "serve", "-m", str(model), "--port", "0", *extra],
        env,
    )
    found = server.wait_for_line(r"serving \S+ at (http://\S+/v1)")
    server.url = found.group(1).replace("0.0.0.0", "127.0.0.1")
    return server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# llama-cpp-python's server, on the CPU kernels the test run's check found safe: on an Intel
# Xeon with AMX its native build crashes on the first prompt in the AMX kernels, as
# llama.cpp's own tools do (issue 29); edgechat's check leaves them out (llama/cpubuffers.py).
SAFE_LLAMA_CPP_SERVER = """
import runpy, sys
from edgechat.llama import backend, kernelcheck
kernelcheck.only_checked(backend.load())
sys.argv[0] = "llama_cpp.server"
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


def llama_cpp_server(model: Path, n_ctx: int = 1024) -> Server:
    """llama-cpp-python's own OpenAI-compatible server (its `server` extra)."""
    port = free_port()
    server = Server(
        [
            sys.executable,
            "-c",
            SAFE_LLAMA_CPP_SERVER,
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(n_ctx),
            "--n_threads",
            "1",  # as the edgechat servers in the tests: two cores are shared
            "--n_threads_batch",
            "1",
        ]
    )
    server.url = f"http://127.0.0.1:{port}/v1"
    if not ready(server, server.url + "/models", 90):
        raise AssertionError(f"llama_cpp.server did not start:\n{server.log}")
    return server


def ready(server: Server, url: str, seconds: float) -> bool:
    """Wait until ``url`` answers 200; False (the server stopped) when it never does."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            if server.proc.poll() is not None:
                break
            time.sleep(0.2)
    server.stop()
    return False
