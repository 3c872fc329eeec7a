"""The server's side of the runner process (``serve/runner.py``): LlamaWorker's interface,
with the LlamaWorker in the runner. It keeps the queue limit, hands each step's events to
their jobs on a reader thread (the courier's llama thread, as far as it knows), and when
the runner dies by a native fault ends every job in flight with an error in its API's
shape and starts a runner again."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from edgechat.errors import EdgechatError
from edgechat.serve.protocol import ApiError
from edgechat.serve.runner import LOCAL, unpack
from edgechat.serve.worker import Job, QueueFull

RESTARTS = 3  # crashes within WINDOW_S before the server stops reloading the model
WINDOW_S = 300.0
FAULTS = {
    signal.SIGSEGV: "segmentation fault",
    signal.SIGBUS: "bus error",
    signal.SIGILL: "illegal instruction",
    signal.SIGFPE: "arithmetic fault",
    signal.SIGABRT: "abort",
    signal.SIGKILL: "killed: out of memory?",
}


class RunnerWorker:
    """LlamaWorker's interface, with the LlamaWorker in a runner process (module doc)."""

    def __init__(
        self, planned, verbose=False, queue_size: int = 32, say=None, keep_alive: float = -1
    ) -> None:
        self._planned, self._verbose, self.keep_alive = planned, verbose, keep_alive
        self.queue_size = queue_size
        self._say = say or (lambda line: None)
        self.on_step: Callable[[], None] = lambda: None
        self.info: dict = {}
        self.slots = 0
        self._lock = threading.Lock()  # the job tables, and sends on the socket
        self._jobs: dict[int, Job] = {}
        self._ids: dict[Job, int] = {}
        self._started: set[int] = set()
        self._held: list[int] = []  # submitted while the runner (re)loads
        self._next = 0
        self._status: dict = {}
        self._asked: dict[int, threading.Event] = {}  # status requests awaiting the runner
        self._refused = 0
        self._mean_s = 1.0
        self._stopping = False
        self._gone: str | None = None  # why the model cannot come back
        self._crashes: list[float] = []
        self._conn = None
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self.pid: int | None = None  # the runner's process (its memory is the model's)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the runner and load the model there; raises what loading raised."""
        why = self._spawn()
        if why is not None:
            raise EdgechatError(why)

    def _spawn(self) -> str | None:
        """A new runner with the model loaded; None, or why it failed."""
        from multiprocessing.connection import Connection

        ours, theirs = socket.socketpair()
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgechat.serve.runner", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # the terminal's Ctrl-C is the server's, even as it starts
        )
        theirs.close()
        conn = Connection(ours.detach())
        try:
            conn.send((self._planned, self._verbose, self.keep_alive))
            while True:
                msg = conn.recv()
                if msg[0] == "say":
                    self._say(msg[1])
                    continue
                break
        except (EOFError, OSError):
            proc.wait()
            return f"the model's process ended while loading ({self._death(proc)})"
        if msg[0] == "failed":
            conn.close()
            proc.wait()
            return msg[1]
        _, self.info, self.slots, self._status = msg
        self._conn, self._proc, self.pid = conn, proc, proc.pid
        self._reader = threading.Thread(target=self._read, name="runner-reader", daemon=True)
        self._reader.start()
        return None

    def interrupt(self) -> None:
        """Stop generating now (Ctrl-C): what runs ends, what waits is refused."""
        with self._lock:
            self._stopping = True
            held, self._held = self._held, []
        for jid in held:
            self._end(jid, ("error", ApiError(503, "the server is shutting down", "shutting_down")))
        self._send(("interrupt",))

    def stop(self, timeout: float = 10.0) -> None:
        self.interrupt()
        self._send(("stop",))
        if self._reader is not None:
            self._reader.join(timeout)
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    # -- requests --------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._stopping:
                raise ApiError(503, "the server is shutting down", "shutting_down")
            if self._gone:
                raise ApiError(503, self._gone, "engine_crashed")
            waiting = len(self._jobs) - len(self._started)
            free = max(0, self.slots - len(self._started))
            if waiting >= self.queue_size + free:
                self._refused += 1
                each = self._mean_s / max(1, self.slots)
                raise QueueFull(max(1, min(60, math.ceil(each * (waiting + 1)))))
            jid = self._next = self._next + 1
            self._jobs[jid], self._ids[job] = job, jid
            if self._conn is None:  # the model is coming back: sent once it has
                self._held.append(jid)
                return
        self._send(("submit", jid, self._fields(job)))

    @staticmethod
    def _fields(job: Job) -> dict:
        return {
            f.name: getattr(job, f.name) for f in dataclasses.fields(Job) if f.name not in LOCAL
        }

    def cancel(self, job: Job) -> None:
        with self._lock:
            job.cancelled.set()
            jid = self._ids.get(job)
            held = jid in self._held
            if held:
                self._held.remove(jid)
        if held:
            self._end(jid, ("end", "cancelled", None))
        elif jid is not None:
            self._send(("cancel", jid))

    def keep(self, seconds: float | None, load: bool = True) -> None:
        """Keep the model loaded ``seconds`` once idle (LlamaWorker.keep, in the runner)."""
        self._send(("keep", seconds, load))

    def status(self) -> dict:
        """The runner's own status, asked for now (it changes between steps too: the
        keep-alive's expiry, an unload), with this side's queue."""
        asked = threading.Event()
        with self._lock:
            self._next = rid = self._next + 1
            self._asked[rid] = asked
        self._send(("status", rid))
        asked.wait(1.0)  # a runner that is loading again answers with what was last known
        with self._lock:
            self._asked.pop(rid, None)
            waiting = len(self._jobs) - len(self._started)
            return {
                **self._status,
                "slots": self.slots,
                "waiting": waiting,
                "queue_size": self.queue_size,
                "refused": self._status.get("refused", 0) + self._refused,
            }

    # -- the reader thread ------------------------------------------------------------------

    def _send(self, msg: tuple) -> None:
        with self._lock:
            conn = self._conn
            if conn is None:
                return
            with contextlib.suppress(OSError, ValueError):
                conn.send(msg)

    def _read(self) -> None:
        """Events from the runner to their jobs, one step at a time; the runner's end."""
        conn = self._conn
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break
            if msg[0] == "say":
                self._say(msg[1])
                continue
            if msg[0] == "status":
                with self._lock:
                    self._status = msg[2]
                    asked = self._asked.get(msg[1])
                if asked is not None:
                    asked.set()
                continue
            _, items, status = msg
            if status is not None:
                with self._lock:
                    self._status = status
            for jid, event, done in items:
                self._deliver(jid, unpack(event), done)
            self.on_step()
        self._ended()

    def _deliver(self, jid: int, event: tuple, done: dict | None) -> None:
        with self._lock:
            job = self._jobs.get(jid)
            if job is None:
                return
            if event[0] == "start":
                self._started.add(jid)
        if done is not None:
            for name, value in done.items():
                setattr(job, name, value)
            self._end(jid, event)
            self._send(("forget", jid))
        else:
            job.emit(event)

    def _end(self, jid: int, event: tuple) -> None:
        """A job's last event: it leaves the tables."""
        with self._lock:
            job = self._jobs.pop(jid, None)
            if job is None:
                return
            self._ids.pop(job, None)
            self._started.discard(jid)
            self._mean_s = 0.8 * self._mean_s + 0.2 * (time.perf_counter() - job.t_request)
        job.emit(event)

    @staticmethod
    def _death(proc: subprocess.Popen) -> str:
        code = proc.returncode
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                sig = signal.Signals(-code)
                return f"{sig.name}: {FAULTS.get(sig, 'killed')}"
        return f"exit code {code}"

    def _ended(self) -> None:
        """The runner's socket closed: a stop, or a crash that ends what was in flight
        with an error and brings the model back."""
        proc = self._proc
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        with self._lock:
            self._conn = None
            stopping = self._stopping
            lost = list(self._jobs)
        if stopping and not lost:
            return
        if stopping:  # it stopped as asked, before these had their ends
            error = ApiError(503, "the server is shutting down", "shutting_down")
            for jid in lost:
                self._end(jid, ("error", error))
            self.on_step()
            return
        why = self._death(proc) if proc.poll() is not None else "it stopped answering"
        now = time.monotonic()
        self._crashes = [t for t in self._crashes if now - t < WINDOW_S] + [now]
        error = ApiError(
            503,
            f"the model's process crashed ({why}) while answering; the server is loading it "
            "again: try again in a few seconds",
            "engine_crashed",
            headers={"Retry-After": "5"},
        )
        for jid in lost:
            self._end(jid, ("error", error))
        self.on_step()
        self._say(
            f"the model's process crashed ({why}); {len(lost)} request(s) in flight were "
            "answered with an error; loading the model again"
        )
        if len(self._crashes) > RESTARTS:
            self._give_up(f"the model crashed {len(self._crashes)} times in a few minutes ({why})")
            return
        t0 = time.perf_counter()
        failed = self._spawn()
        if failed is not None:
            self._give_up(f"the model could not be loaded again: {failed}")
            return
        self._say(f"the model is back ({time.perf_counter() - t0:.1f} s)")
        with self._lock:
            held, self._held = self._held, []
            jobs = [(jid, self._jobs[jid]) for jid in held if jid in self._jobs]
        for jid, job in jobs:
            self._send(("submit", jid, self._fields(job)))

    def _give_up(self, why: str) -> None:
        with self._lock:
            self._gone = f"{why}; restart the server (its log says more)"
            held, self._held = self._held, []
        for jid in held:
            self._end(jid, ("error", ApiError(503, self._gone, "engine_crashed")))
        self.on_step()
        self._say(self._gone)
