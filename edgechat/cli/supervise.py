"""The `edgechat` process watches its own command: a native fault never leaves the user
with a bare "Segmentation fault" and a terminal stuck in the app's screen.

A fault inside llama.cpp (a kernel miscompiled for this CPU, an abort from GGML_ASSERT,
a GPU driver) kills the process with no Python left to run, so nothing in that process
can restore the terminal or say what happened. Ollama and LM Studio run the model in a
runner process the front end supervises; edgechat's lighter answer for the commands a
person runs is a supervisor: right after the arguments are parsed (no threads yet) the
process forks, the child runs the command as before, and the parent only waits. It
costs one fork (about a millisecond) and nothing per token: the child's reply loop is
the same code. When the child dies by a signal, the parent puts the terminal back as it
found it (modes, screen, cursor, mouse) and says in one line what failed and what to do.
What the child had stored stays stored (the app writes a reply to its database as it
streams). `serve` also runs its model in a runner process of its own
(``serve/runner.py``), so a fault answers the requests in flight instead of dropping them.

Signals: the terminal sends Ctrl-C (SIGINT, SIGQUIT) to the whole foreground group, so
the child gets its own; a signal sent to this process by another program (``kill``, a
service manager, a test) is passed on to the child. On Linux the parent tells the two
apart with ``sigwaitinfo``; elsewhere it ignores SIGINT (the terminal's reaches the
child) and passes on SIGTERM and SIGHUP. A closed terminal's SIGHUP always goes on: the
kernel sends it to the session leader alone, which the parent may be. Windows has no fork: the
command runs unsupervised there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable

FAULTS = {  # signals a native fault raises, in words
    signal.SIGSEGV: "segmentation fault",
    signal.SIGBUS: "bus error",
    signal.SIGILL: "illegal instruction",
    signal.SIGFPE: "arithmetic fault",
    signal.SIGABRT: "abort (a failed assertion)",
}
PASSED_ON = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_SI_KERNEL = 0x80  # siginfo si_code of a signal the kernel (a terminal) sent
# What a full-screen app may have switched on, switched off again: the main screen, the
# cursor, mouse reports, bracketed paste, focus reports, the kitty keyboard protocol.
RESET = (
    "\x1b[?1049l\x1b[?25h\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?1015l"
    "\x1b[?2004l\x1b[?1004l\x1b[<u\x1b[?7h\x1b[0m"
)


def crash_log() -> str | None:
    """Where the child's Python stack goes on a fault (faulthandler), for a bug report:
    one file per run, removed when the run ends without a fault."""
    from edgechat.errors import EdgechatError
    from edgechat.paths import ensure_private_dir, paths

    try:
        folder = ensure_private_dir(paths().cache_dir)
    except (OSError, ValueError, EdgechatError):
        return None  # no log; the command itself says what is wrong with the folder
    return str(folder / f"crash-{os.getpid()}.log")


def run(command: Callable[[], int], what: str, saved: str = "") -> int:
    """Run ``command`` in a supervised child; its exit code, or 1 after a native fault.
    ``what`` names the work for the one line ('edgechat chat'); ``saved`` says what the
    command keeps on disk as it goes ('the chat is saved up to the crash')."""
    if not hasattr(os, "fork") or os.environ.get("EDGECHAT_SUPERVISED"):
        return command()
    log = crash_log()
    tty = _terminal()
    modes = _modes(tty)
    precise = hasattr(signal, "sigwaitinfo")
    waited = {*PASSED_ON, signal.SIGCHLD}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, waited) if precise else None
    pid = os.fork()
    if pid == 0:  # the child: the command, as it would run alone
        os.environ["EDGECHAT_SUPERVISED"] = "1"  # its own children run unsupervised
        if precise:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        _faulthandler(log)
        return command()
    status = _wait(pid, precise, waited)
    if precise:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
    if log is not None and sig not in FAULTS:
        with contextlib.suppress(OSError):
            os.unlink(log)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    _restore(tty, modes)
    if sig == signal.SIGINT:
        return 130
    if sig in FAULTS:
        where = f"; its Python stack is in {log}" if log and _nonempty(log) else ""
        sys.stderr.write(
            f"edgechat: `{what}` stopped: llama.cpp (native code) crashed with a "
            f"{FAULTS[sig]} ({signal.Signals(sig).name}){'; ' + saved if saved else ''}. "
            "Try `--cpu-kernels plain` or `edgechat doctor --check-kernels`; if it happens "
            f"again, report it with the model and this line{where}\n"
        )
        return 1
    if sig == signal.SIGKILL:
        sys.stderr.write(
            f"edgechat: {what} was killed (SIGKILL): the system may have run out of memory; "
            "a smaller model or --ctx needs less\n"
        )
        return 1
    # Ended by another signal (SIGTERM, SIGHUP): end the same way, as the command alone
    # would have, for whatever watches this process (a service manager, a shell).
    signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
    os.kill(os.getpid(), sig)
    return 128 + sig


def _wait(pid: int, precise: bool, waited: set) -> int:
    """Wait for the child, passing on what other programs send; its wait status."""
    if not precise:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda s, _f: _pass_on(pid, s))
        while True:
            with contextlib.suppress(InterruptedError):
                return os.waitpid(pid, 0)[1]
    while True:
        info = signal.sigwaitinfo(waited)
        if info.si_signo == signal.SIGCHLD:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
        elif info.si_code != _SI_KERNEL or info.si_signo == signal.SIGHUP:
            _pass_on(pid, info.si_signo)  # a program's signal, or the terminal hung up


def _pass_on(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _faulthandler(log: str | None) -> None:
    """On a fault, the child's Python stack goes to the crash log (and the fault on to
    the parent, unchanged)."""
    if log is None:
        return
    import faulthandler

    with contextlib.suppress(OSError):
        fh = open(log, "w")  # noqa: SIM115 - open for the life of the process
        faulthandler.enable(fh, all_threads=True)


def _nonempty(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False


def _terminal() -> int | None:
    """A descriptor of the terminal the command draws on, when there is one."""
    for stream in (sys.stdout, sys.stderr, sys.stdin):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            if stream is not None and os.isatty(stream.fileno()):
                return stream.fileno()
    return None


def _modes(tty: int | None):
    if tty is None:
        return None
    try:
        import termios

        return termios.tcgetattr(tty)
    except (ImportError, OSError):
        return None


def _restore(tty: int | None, modes) -> None:
    """The terminal as the command found it: its modes, the main screen, the cursor."""
    if tty is None:
        return
    with contextlib.suppress(ImportError, OSError):
        import termios

        if modes is not None:
            termios.tcsetattr(tty, termios.TCSADRAIN, modes)
    with contextlib.suppress(OSError):
        os.write(tty, RESET.encode())
