"""The model of `serve` in a runner process of its own: a native fault in llama.cpp (a
kernel that crashes on this CPU, an abort from GGML_ASSERT) ends the runner, not the
server, so every request in flight is answered with an error in its API's shape and the
runner is started again for the next ones, as Ollama's runners are.

The runner (``python -m edgechat.serve.runner``) holds the whole llama thread,
``serve/worker.py``'s LlamaWorker, unchanged: loading, prompts, slots, every decode.
The server talks to it over a socket pair with pickled messages: a job's fields go in
(``submit``, ``cancel``), and after each decode step one message comes back with every
event of that step (start, text, end, error) and the worker's status when it changed.
``serve/runnerworker.py``'s RunnerWorker keeps LlamaWorker's interface on the server's
side, its queue limit included, so the routes do not know which they hold. What it costs:
one message per step each way at most (tens of microseconds against a step of tens of
milliseconds); ``benchmarks/serve.py`` measures it against llama-server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import threading
from collections.abc import Callable

from edgechat.errors import EdgechatError
from edgechat.serve.protocol import ApiError
from edgechat.serve.worker import Job, LlamaWorker

LOCAL = ("emit", "cancelled")  # a Job's fields that stay in their process
INPUTS = ("messages", "prompt", "prefix", "tokens", "sampling")  # not sent back


def pack(event: tuple) -> tuple:
    """An event for the pipe: an ApiError as its fields (exceptions pickle poorly)."""
    if event[0] == "error" and isinstance(event[1], ApiError):
        e = event[1]
        return ("error", ("api", e.status, e.message, e.code, e.param, e.headers))
    return event


def unpack(event: tuple) -> tuple:
    if event[0] == "error" and isinstance(event[1], tuple) and event[1][:1] == ("api",):
        _, status, message, code, param, headers = event[1]
        return ("error", ApiError(status, message, code, param, headers))
    return event


# -- the runner process -------------------------------------------------------------------


class _Outbox:
    """The runner's events: those of the llama thread sent once per step (its
    ``on_step``), any other thread's (the prompt thread's refusals, a cancel) at once by
    a sender thread of their own: the worker emits those holding its lock, which the
    status sent with them needs."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self.items: list = []
        self.worker: LlamaWorker | None = None
        self._status: dict | None = None
        self._llama: int | None = None  # the llama thread, once it has stepped
        self._kick = threading.Event()
        threading.Thread(target=self._sender, name="outbox", daemon=True).start()

    def _sender(self) -> None:
        while True:
            self._kick.wait()
            self._kick.clear()
            with contextlib.suppress(OSError, ValueError):
                self.flush()

    def emitter(self, jid: int, job_ref: list) -> Callable[[tuple], None]:
        def emit(event: tuple) -> None:
            done = None
            if event[0] in ("end", "error"):  # what the job learnt goes back with its end
                job = job_ref[0]
                done = {
                    f.name: getattr(job, f.name)
                    for f in dataclasses.fields(Job)
                    if f.name not in LOCAL + INPUTS
                }
            with self.lock:
                self.items.append((jid, pack(event), done))
            if threading.get_ident() != self._llama:
                self._kick.set()

        return emit

    def say(self, line: str) -> None:
        with self.lock:
            self.conn.send(("say", line))

    def step(self) -> None:
        """The llama thread's ``on_step``: this step's events in one message."""
        self._llama = threading.get_ident()
        self.flush()

    def flush(self) -> None:
        status = self.worker.status() if self.worker is not None else None
        with self.lock:
            changed = status != self._status
            if not self.items and not changed:
                return
            items, self.items = self.items, []
            self._status = status
            self.conn.send(("events", items, status if changed else None))


def _runner(fd: int) -> None:
    """The runner's main: load, then follow the server's messages until told to stop or
    until the server is gone (end of the socket)."""
    import faulthandler
    from multiprocessing.connection import Connection

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the server decides when the runner stops
    faulthandler.enable()  # a fault's Python stack goes to the server's log
    conn = Connection(fd)
    planned, verbose, keep_alive = conn.recv()
    out = _Outbox(conn)
    from edgechat.service import load

    worker = LlamaWorker(
        lambda: load(planned, verbose, out.say).engine, queue_size=1 << 30, keep_alive=keep_alive
    )
    try:
        worker.start()
    except BaseException as exc:  # noqa: BLE001 - said to the server, which says it once
        why = str(exc) if isinstance(exc, EdgechatError) else f"{type(exc).__name__}: {exc}"
        conn.send(("failed", why))
        return
    out.worker = worker
    worker.on_step = out.step
    conn.send(("ready", worker.info, worker.slots, worker.status()))
    jobs: dict[int, Job] = {}
    try:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                return  # the server is gone
            kind = msg[0]
            if kind == "submit":
                _, jid, fields = msg
                ref: list = [None]
                job = ref[0] = Job(**fields, emit=out.emitter(jid, ref))
                jobs[jid] = job
                try:
                    worker.submit(job)
                except ApiError as exc:
                    job.emit(("error", exc))
            elif kind == "cancel" and (job := jobs.get(msg[1])) is not None:
                worker.cancel(job)
            elif kind == "forget":
                jobs.pop(msg[1], None)
            elif kind == "keep":
                worker.keep(msg[1], load=msg[2])
            elif kind == "status":
                with out.lock:
                    conn.send(("status", msg[1], worker.status()))
            elif kind == "interrupt":
                worker.interrupt()
            elif kind == "stop":
                worker.stop()
                out.flush()
                return
            out.flush()
    finally:
        with contextlib.suppress(Exception):
            worker.stop()


if __name__ == "__main__":
    _runner(int(sys.argv[1]))
