"""Private by construction: chat and summarise open no network connection."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest

from edgechat import cli


@pytest.fixture
def no_network(monkeypatch):
    """Fail, and record, every attempt to open a connection or resolve a name."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted during an offline command")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for key in ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        monkeypatch.delenv(key, raising=False)
    return attempts


@pytest.mark.model
def test_chat_opens_no_connection(no_network, capsys):
    assert cli.main(["chat", "--plain", "--max-tokens", "30", "Name three colours."]) == 0
    out = capsys.readouterr().out
    assert out.strip(), "a real reply came back"
    assert no_network == []
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_HUB_DISABLE_TELEMETRY"] == "1"


@pytest.mark.model
def test_summarise_opens_no_connection(no_network, capsys, tmp_path):
    doc = tmp_path / "notes.txt"
    doc.write_text("The meeting moved to Friday. Bring the budget figures and the new plan.\n")
    assert cli.main(["summarise", str(doc)]) == 0
    assert capsys.readouterr().out.strip()
    assert no_network == []


@pytest.mark.model
@pytest.mark.subprocess
def test_piped_chat_in_a_process_without_a_network():
    """The acceptance line: `printf 'Name three colours.\\n' | edgechat chat --plain`
    in a process that has no network at all (a fresh network namespace)."""
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-n", "true"]).returncode != 0:
        pytest.skip("cannot create a network namespace here (needs root or user namespaces)")
    result = subprocess.run(
        [unshare, "-n", sys.executable, "-m", "edgechat", "chat", "--plain"],
        input="Name three colours.\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
