"""llama_model_quantize in a process of its own (lab/quantize.py's module doc says why).

The child starts in a session of its own, so Ctrl-C at the terminal reaches only this
process, which ends the child at once: nothing is lost while the child starts (ignoring
SIGINT here for that time lost a Ctrl-C pressed then), and nothing is printed from it.
Its progress and its result come back through a socket.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from edgechat.errors import EdgechatError
from edgechat.lab.imatrix import ImportanceMatrix

_PROGRESS = re.compile(r"\[\s*(\d+)/\s*(\d+)\]")
_MAIN = "import sys; from edgechat.lab.quantchild import main; main(int(sys.argv[1]))"


def quantise_in_child(src: Path, tmp: Path, spec: dict, imatrix, progress) -> tuple[int, str]:
    """Quantise ``src`` into ``tmp`` in the child, reporting ``progress(i, n)``; Ctrl-C,
    SIGTERM or SIGHUP here end it at once. Returns (llama.cpp's code, its first
    complaint)."""
    from multiprocessing.connection import Connection

    ours, theirs = socket.socketpair()
    conn = Connection(ours.detach())
    child = None
    with _stops():
        try:
            child = subprocess.Popen(
                [sys.executable, "-c", _MAIN, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # the terminal's Ctrl-C is this process's to act on
            )
            theirs.close()
            conn.send((str(src), str(tmp), spec, imatrix))
            while True:
                message = conn.recv()
                if message[0] == "progress":
                    if progress:
                        progress(message[1], message[2])
                    continue
                return message[1], message[2]
        except (EOFError, OSError) as exc:
            if child is None:
                raise EdgechatError(f"could not start a process to quantise in: {exc}") from None
            code = child.wait()
            how = signal.Signals(-code).name if code < 0 else f"exit code {code}"
            raise EdgechatError(
                f"llama.cpp stopped while quantising {src.name} ({how}): out of memory or "
                "disk? nothing was written"
            ) from None
        finally:
            theirs.close()
            conn.close()  # a child that never heard from us sees the end and leaves
            if child is not None:
                if child.poll() is None:
                    child.kill()
                child.wait()


def main(fd: int) -> None:
    """In the child: quantise, sending ("progress", i, n) and ("done", rc, why)."""
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides, and ends it
    conn = Connection(fd)
    try:
        src, tmp, spec, imatrix = conn.recv()
    except EOFError:  # the parent stopped as we started
        return
    from edgechat.llama.backend import LOG, load

    try:
        lc = load()
        params = lc.llama_model_quantize_default_params()
        for name, value in spec.items():
            setattr(params, name, value)
        keep = _hand_over(lc, params, imatrix) if imatrix is not None else None

        def listen(line: str) -> None:
            m = _PROGRESS.search(line)
            if m:
                try:
                    conn.send(("progress", int(m.group(1)), int(m.group(2))))
                except OSError:  # the parent is gone (killed): stop now, not at the end
                    os._exit(1)  # its partial file goes at the next run beside it

        LOG.listener = listen
        mark = LOG.mark()
        rc = lc.llama_model_quantize(src.encode(), tmp.encode(), params)
        conn.send(("done", rc, LOG.first_error_since(mark) if rc else ""))
        del keep  # the matrix's C arrays lived until llama.cpp was done with them
    except Exception as exc:  # said by the parent, in one line
        conn.send(("done", -1, f"{type(exc).__name__}: {exc}"))


@contextlib.contextmanager
def _stops():
    """SIGTERM and SIGHUP (a closed terminal) stop the work as Ctrl-C does, so the
    partial file is removed on the way out (main thread only: signals land there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(_signum, _frame) -> None:
        raise KeyboardInterrupt

    wanted = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    before = {sig: signal.signal(sig, stop) for sig in wanted}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _hand_over(lc, params, matrix: ImportanceMatrix) -> list:
    """Point ``params`` at the matrix's means of squares, as llama-quantize does: a C
    array of {name, data, size} ended by an empty entry, and the same metadata keys
    (``quantize.imatrix.*``). Returns what must stay alive until quantising is done."""
    import ctypes

    means = matrix.mean_squares()
    entries = (lc.llama_model_imatrix_data * (len(means) + 1))()
    keep: list = [entries, means]
    for entry, (name, values) in zip(entries, means.items(), strict=False):
        entry.name = name.encode()
        entry.data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        entry.size = values.size
    params.imatrix = entries
    kv = []
    if matrix.path:
        kv.append(("quantize.imatrix.file", matrix.path))
    if matrix.datasets:
        kv.append(("quantize.imatrix.dataset", matrix.datasets[0]))
    kv.append(("quantize.imatrix.entries_count", len(means)))
    if matrix.chunk_count > 0:
        kv.append(("quantize.imatrix.chunks_count", matrix.chunk_count))
    overrides = (lc.llama_model_kv_override * (len(kv) + 1))()  # the last key is empty
    for o, (key, value) in zip(overrides, kv, strict=False):
        o.key = key.encode()
        if isinstance(value, str):
            o.tag = lc.LLAMA_KV_OVERRIDE_TYPE_STR
            o.value.val_str = value.encode()[:127]
        else:
            o.tag = lc.LLAMA_KV_OVERRIDE_TYPE_INT
            o.value.val_i64 = value
    params.kv_overrides = overrides
    keep.append(overrides)
    return keep
