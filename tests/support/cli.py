"""The `edgechat` command, run as a test needs it.

``run_main`` runs it in this process: for arguments, settings and error messages, where
a child process would only add its start-up (importing llama.cpp takes seconds on two
cores). ``run_cli`` runs the real command in a child process, for what only a process
shows: exit codes on signals, standard input from a pipe, start-up imports, privacy.
Both return what a finished process does: ``returncode``, ``stdout``, ``stderr``.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def run_main(*args: str, input: str | None = None, env: dict | None = None) -> Ran:
    """``edgechat ARGS`` through ``edgechat.cli.main`` in this process, with ``input`` as
    piped standard input. The environment is restored afterwards (a command may switch
    this process offline), the keyring chosen again from it, and llama.cpp's log made
    quiet, so one call leaves nothing behind for the next test."""
    from edgechat.cli import main

    saved = dict(os.environ)
    os.environ.update(env or {})
    _keyring_from_env()
    out, err = io.StringIO(), io.StringIO()
    stdin = io.TextIOWrapper(io.BytesIO((input or "").encode()), encoding="utf-8")
    streams = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = stdin, out, err
    try:
        code = main(list(args))
    except SystemExit as exit_:  # argparse: usage errors, --help, --version
        code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    finally:
        sys.stdin, sys.stdout, sys.stderr = streams
        os.environ.clear()
        os.environ.update(saved)
        _keyring_from_env()
        if backend := sys.modules.get("edgechat.llama.backend"):
            backend.LOG.verbose = False  # --verbose: llama.cpp's log goes quiet again
    return Ran(code, out.getvalue(), err.getvalue())


def _keyring_from_env() -> None:
    """The keyring backend PYTHON_KEYRING_BACKEND names now, as a new process would
    choose it (keyring keeps the first backend it chose for the life of the process)."""
    if "keyring.core" in sys.modules:
        sys.modules["keyring.core"].init_backend()


def child_env(env: dict | None = None) -> dict:
    """This environment with ``env`` over it, and the tests folder importable (for
    ``support.filekeyring``) ahead of whatever PYTHONPATH already holds."""
    full = {**os.environ, **(env or {})}
    full["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(TESTS), str(REPO), full.get("PYTHONPATH", "")) if p
    )
    return full


def run_cli(*args: str, input: str | None = None, env: dict | None = None, cwd=None, timeout=120):
    """Run the real `edgechat` command in a child process."""
    stdin = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
    return subprocess.run(
        [sys.executable, "-m", "edgechat", *args],
        **stdin,
        capture_output=True,
        text=True,
        env=child_env(env),
        cwd=cwd,
        timeout=timeout,
    )
