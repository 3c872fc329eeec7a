"""The plain chat in a real pseudo-terminal: Ctrl-C stops a reply, Ctrl-D leaves."""

from __future__ import annotations

import signal
import time

import pytest
from support.terminal import Terminal


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


@pytest.mark.model
@pytest.mark.subprocess
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
