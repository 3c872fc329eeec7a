"""The real `edgechat` command in a pseudo-terminal, as a user at a keyboard runs it:
what it draws is read back, keys and signals are sent."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

from support.cli import child_env


class Terminal:
    def __init__(self, *args: str) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgechat", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=child_env({"TERM": "dumb"}),
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
