"""A native fault never takes the user's terminal or work with it (issue 29): `edgechat`
runs its command in a child it supervises (cli/supervise.py). The fault is the real
signal a crashing kernel raises (SIGSEGV, SIGABRT), sent to that child mid-reply."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest
from support.cli import REPO, child_env, run_main

from edgechat.tasks.conversations import Store


def _child(parent_pid: int, seconds: float = 60) -> psutil.Process:
    """The supervised command: the supervisor's forked child."""
    deadline = time.monotonic() + seconds
    while not (children := psutil.Process(parent_pid).children()):
        assert time.monotonic() < deadline, "no supervised child appeared"
        time.sleep(0.05)
    return children[0]


def _plain_chat(edgechat_home):
    run_main("config", "set", "max_tokens", "400")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgechat", "chat", "--plain"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
    )
    proc.stdin.write(b"Write a long essay about the sea and its ships.\n")
    proc.stdin.flush()
    first = proc.stdout.read(20)  # the reply is streaming
    assert first, proc.stderr.read().decode()
    return proc


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("sig", "words"),
    [
        (signal.SIGSEGV, "crashed with a segmentation fault (SIGSEGV)"),
        (signal.SIGABRT, "crashed with a abort (a failed assertion) (SIGABRT)"),
        (signal.SIGKILL, "was killed (SIGKILL): the system may have run out of memory"),
    ],
)
def test_a_native_fault_mid_reply_is_one_line(starter_path, edgechat_home, sig, words):
    proc = _plain_chat(edgechat_home)
    _child(proc.pid).send_signal(sig)
    _, err = proc.communicate(timeout=60)
    err = err.decode()
    assert proc.returncode == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgechat: ") and words in lines[0], err
    assert "Traceback" not in err and "Fatal Python error" not in err
    if sig != signal.SIGKILL:  # the child's Python stack went to the crash log it names
        log = lines[0].rsplit(" ", 1)[-1]
        with open(log) as fh:
            assert "Fatal Python error" in fh.read()


@pytest.mark.subprocess
def test_signals_from_other_programs_reach_the_command(starter_path, edgechat_home):
    """A service manager's SIGTERM goes to the supervisor's pid: the command ends."""
    proc = _plain_chat(edgechat_home)
    child = _child(proc.pid)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM  # ended as the command alone would
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    assert not list((edgechat_home / "cache").glob("crash-*.log"))  # no fault: no log left


@pytest.mark.subprocess
@pytest.mark.parametrize("home", ["rel", "/proc/self"])
def test_a_home_the_supervisor_cannot_use_is_the_commands_one_line(home):
    """The supervisor makes its crash log in the home's cache before the command runs: a
    relative EDGECHAT_HOME raised there, a traceback (found by hand; run_main, which the
    other tests of homes use, is not supervised)."""
    proc = subprocess.run(
        [sys.executable, "-m", "edgechat", "history", "list"],
        capture_output=True,
        text=True,
        env=child_env() | {"EDGECHAT_HOME": home},
        timeout=60,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("edgechat: ") and "EDGECHAT_HOME" in lines[0]


@pytest.mark.tmux
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_a_closed_terminal_ends_the_app_and_its_supervisor(edgechat_home, starter_path):
    """The kernel sends a hung-up terminal's SIGHUP to the session leader only: the
    supervisor passes it on, or the app would live on, spinning on a dead terminal."""
    run_main("config", "set", "default_model", str(starter_path))
    session = f"edgechat-hup-{time.monotonic_ns()}"
    cmd = f"env EDGECHAT_HOME={edgechat_home} PYTHONPATH={REPO} {sys.executable} -m edgechat chat"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", cmd])
    try:
        deadline = time.monotonic() + 90
        while (
            "is ready"
            not in subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True
            ).stdout
        ):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        pane = subprocess.run(
            ["tmux", "display", "-p", "-t", session, "#{pane_pid}"], capture_output=True, text=True
        )
        top = psutil.Process(int(pane.stdout.strip()))
        family = [top, *top.children(recursive=True)]
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    gone, alive = psutil.wait_procs(family, timeout=30)
    assert not alive, [p.cmdline() for p in alive]


@pytest.mark.tmux
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_the_app_crashing_mid_reply_gives_back_a_usable_terminal(edgechat_home, starter_path):
    run_main("config", "set", "default_model", str(starter_path))
    run_main("config", "set", "max_tokens", "400")
    session = f"edgechat-crash-{time.monotonic_ns()}"
    cmd = (
        f"env EDGECHAT_HOME={edgechat_home} PYTHONPATH={REPO} TERM=xterm-256color "
        f"{sys.executable} -m edgechat chat; echo EXIT=$?; "
        "echo MODES=$(stty -a | grep -oE -- '-?(icanon|echo) ' | tr -d ' \\n'); sleep 60"
    )

    def tmux(*args) -> str:
        return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout

    def wait_for(text: str, seconds: float = 90) -> str:
        deadline = time.monotonic() + seconds
        while text not in (shown := tmux("capture-pane", "-p", "-t", session)):
            assert time.monotonic() < deadline, f"{text!r} never came:\n{shown}"
            time.sleep(0.2)
        return shown

    tmux("new-session", "-d", "-s", session, "-x", "80", "-y", "24", cmd)
    try:
        wait_for("is ready")
        question = "Write a long essay about the sea and its ships."
        tmux("send-keys", "-t", session, question, "Enter")
        time.sleep(0.5)
        shell = int(tmux("display", "-p", "-t", session, "#{pane_pid}").strip())
        app = next(p for p in psutil.Process(shell).children() if "python" in p.name())
        child = _child(app.pid)
        time.sleep(3)  # a few seconds of reply on the screen
        child.send_signal(signal.SIGSEGV)
        shown = wait_for("EXIT=1")
        assert "crashed with a segmentation fault (SIGSEGV)" in shown.replace("\n", "")
        state = tmux("display", "-p", "-t", session, "#{alternate_on} #{cursor_flag}").split()
        assert state == ["0", "1"], state  # the main screen again, the cursor shown
        assert "MODES=icanonecho" in wait_for("MODES=")  # line editing and echo are back
        store = Store()
        (chat,) = [c for c in store.list() if store.messages(c.id)]
        user = store.messages(chat.id)[0]
        store.close()
        assert user.content == question  # what was typed is kept
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
