"""The plain chat in a real pseudo-terminal: Ctrl-C stops a reply, Ctrl-D leaves."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest


class Terminal:
    def __init__(self, *args: str) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgechat", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**os.environ, "TERM": "dumb"},
            close_fds=True,
        )
        os.close(slave)
        self.screen = ""

    def read_until(self, text: str, timeout: float = 60.0, start: int = 0) -> int:
        """Read output until ``text`` appears after position ``start``; returns where it ends."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.screen.find(text, start)
            if found >= 0:
                return found + len(text)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} did not appear; screen so far:\n{self.screen!r}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    self.screen += os.read(self.master, 4096).decode("utf-8", "replace")
                except OSError:  # the child closed the terminal
                    raise AssertionError(f"{text!r} never came; screen:\n{self.screen}") from None

    def read_more(self, start: int, n_chars: int, timeout: float = 60.0) -> None:
        """Wait until at least ``n_chars`` have come after ``start``."""
        deadline = time.monotonic() + timeout
        while len(self.screen) < start + n_chars:
            assert time.monotonic() < deadline, f"output stalled:\n{self.screen}"
            ready, _, _ = select.select([self.master], [], [], 0.5)
            if ready:
                self.screen += os.read(self.master, 4096).decode("utf-8", "replace")

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.master)


@pytest.fixture
def terminal():
    terms = []

    def start(*args):
        term = Terminal(*args)
        terms.append(term)
        return term

    yield start
    for term in terms:
        term.close()


def test_ctrl_c_stops_the_reply_and_keeps_the_session(terminal):
    term = terminal("chat", "--plain", "--max-tokens", "3000", "--seed", "7")
    pos = term.read_until(">>> ")
    time.sleep(0.2)
    term.type("Write a very long story about a dragon who learns to cook.\n")
    pos = term.read_until("cook.\r\n", start=pos)  # the echo of the line typed
    term.read_more(pos, 40)  # the reply is streaming
    term.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    pos = term.read_until("[stopped]", start=pos)
    pos = term.read_until(">>> ", start=pos)
    time.sleep(0.2)
    term.type("/stats\n")
    pos = term.read_until("ended: cancelled", start=pos)
    pos = term.read_until(">>> ", start=pos)
    time.sleep(0.2)
    term.type("Say hello.\n")
    pos = term.read_until("hello.\r\n", start=pos)
    pos = term.read_until(">>> ", start=pos)
    assert term.proc.poll() is None, "the session survived Ctrl-C"
    time.sleep(0.2)  # readline checks for signals only once it waits for keys
    term.proc.send_signal(signal.SIGINT)  # Ctrl-C at the prompt only hints
    pos = term.read_until("Ctrl-D or /quit", start=pos)
    pos = term.read_until(">>> ", start=pos)
    time.sleep(0.2)  # let readline take the terminal before the key arrives
    term.type("\x04")  # Ctrl-D at an empty prompt leaves
    assert term.proc.wait(timeout=30) == 0
