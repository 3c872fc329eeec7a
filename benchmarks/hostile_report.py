"""Every hostile input through the real commands, counted: the table of issue #14.

    python benchmarks/hostile_report.py [--json] [--quick]

Areas: hostile GGUF files (tests/hostile_gguf.py) through inspect, estimate, models
import and chat; a hostile loopback hub (tests/hubserver.py) through `models pull`;
bad flags, bad settings and damaged state files (config.toml, models.toml,
models.json); the conversation database locked, damaged or in the way; ten imports
at once into models.json.

Commands run in a worker process that imports edgechat once and calls its ``main``
per input (a traceback is what ``main`` would let escape); a worker killed by a
signal is a crash, one that does not answer in 60 s is a hang, and a fresh worker
takes over. Each input is classified:

  clean     refused with one line (``edgechat: ...`` exit 1, or argparse's exit 2)
  handled   accepted as it should be, and what was shown has no control characters
  traceback an exception escaped
  crash     the process died on a signal (llama.cpp's SIGABRT)
  hang      no answer in 60 s
  accepted  exit 0 where it had to be refused (wrongly accepted)
  lost      data lost, or a file written or removed outside HF_HOME and edgechat's folders
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]
COLUMNS = ["clean", "handled", "traceback", "crash", "hang", "accepted", "lost"]
HANG_S = 60.0


# -- the worker: edgechat's main, in-process, one command per line ------------------------


def worker() -> None:
    from edgechat.cli import main

    for line in sys.stdin:
        job = json.loads(line)
        os.environ.update(job.get("env", {}))
        out, err = io.StringIO(), io.StringIO()
        rc = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(job["argv"])
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else 1
            except BaseException:
                import traceback

                traceback.print_exc()
                rc = 1
        print(json.dumps({"rc": rc, "out": out.getvalue(), "err": err.getvalue()}), flush=True)


class Worker:
    def __init__(self) -> None:
        self.proc = None

    def _start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO,
        )

    def run(self, argv: list[str], env: dict | None = None) -> dict:
        """{'rc', 'out', 'err'}; rc 'crash' or 'hang' when the worker died or stalled."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.proc.stdin.write(json.dumps({"argv": argv, "env": env or {}}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], HANG_S)
        if not ready:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            return {"rc": "hang", "out": "", "err": ""}
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            self.proc = None
            return {"rc": "crash", "out": "", "err": f"signal {-code}"}
        return json.loads(line)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


def classify(result: dict, expect: str = "refuse", changed: bool = False) -> str:
    if changed:
        return "lost"
    rc, err, out = result["rc"], result["err"], result["out"]
    if rc in ("crash", "hang"):
        return rc
    if "Traceback" in err:
        return "traceback"
    if expect == "accept":
        shown = out + err
        ok = rc == 0 and not any(c in shown for c in "\x1b\x07\x9b")
        return "handled" if ok else "accepted"
    if rc == 0:
        return "accepted"
    lines = [line for line in err.splitlines() if line.strip()]
    if rc == 1 and len(lines) == 1 and lines[0].startswith("edgechat: "):
        return "clean"
    if rc == 2 and lines and "error:" in lines[-1]:
        return "clean"  # argparse: usage, then the error line
    return "traceback"  # several lines or no message: not a clean refusal


# -- the areas -----------------------------------------------------------------------------


def gguf_area(w: Worker, home: Path, quick: bool) -> list[tuple[str, str]]:
    import hostile_gguf as hostile

    folder = home / "gguf"
    folder.mkdir()
    rows = []
    fifo = folder / "fifo.gguf"
    os.mkfifo(fifo)
    inputs = {name: hostile.write(name, folder) for name in hostile.CASES}
    inputs["fifo"], inputs["dev-zero"] = fifo, Path("/dev/zero")
    commands = [["inspect"], ["estimate"], ["models", "import"], ["chat", "--max-tokens", "4"]]
    for name, path in inputs.items():
        for cmd in commands[:1] if quick else commands:
            # "ok" files load and run; "run" files load (chat must stop with a message).
            loads = hostile.EXPECT.get(name) == "ok" or (
                hostile.EXPECT.get(name) == "run" and cmd[0] != "chat"
            )
            expect = "accept" if loads else "refuse"
            argv = [*cmd, str(path)] if cmd[0] != "chat" else [*cmd, "--model", str(path), "Hi"]
            res = w.run(argv)
            rows.append((f"gguf {name} :: {' '.join(cmd)}", classify(res, expect)))
        w.run(["models", "rm", f"{name}:?"])  # forget what was imported (ok cases)
    return rows


def hub_area(home: Path) -> list[tuple[str, str]]:
    import hashlib

    from support.hubserver import Hub
    from test_hostile_hub import TRAVERSAL_NAMES

    from edgechat.errors import EdgechatError
    from edgechat.models import hub, registry, transfer

    owner, good, payload = "evil/model-GGUF", "m-Q4_K_M.gguf", b"GGUF" + os.urandom(200_000)
    outside = home / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    os.environ["HF_HOME"] = str(home / "hf")
    os.environ["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
    transfer.STALL_WINDOW_S = 2.0
    sha = hashlib.sha256(payload).hexdigest()

    def snapshot() -> dict:
        return {str(p): p.read_bytes() for p in outside.rglob("*") if p.is_file()}

    cases: list[tuple[str, dict, dict, str, str]] = []  # name, files, faults, expect, spec
    spec = f"{owner}:Q4_K_M"
    for n in TRAVERSAL_NAMES:
        cases.append((f"name {n!r}", {n: payload}, {}, "refuse", spec))
    for field, value in [
        ("commit", "../../outside"),
        ("commit", None),
        ("listed_sha", "../../outside/precious.txt"),
        ("listed_sha", "/etc/passwd"),
        ("linked_etag", "0" * 64),
        ("served_size", 12345),
        ("claimed_size", 55 * 10**12),
        ("claimed_size", -5),
    ]:
        cases.append((f"{field}={value!r}", {good: payload}, {field: value}, "refuse", spec))
    cases.append(
        ("etag path, no LFS hash", {good: payload}, {"listed_sha": "", "linked_etag": "../x"},
         "refuse", spec)
    )  # fmt: skip
    for body in [b"<html>hi</html>", b"[]", b'{"siblings": 7}', b"{", b""]:
        cases.append(
            (f"api body {body[:16]!r}", {good: payload}, {"api_body": body}, "refuse", spec)
        )
    for where in ("api_status", "resolve_status", "cdn_status"):
        for status in (401, 403, 404, 500, 502):
            cases.append((f"{where} {status}", {good: payload}, {where: status}, "refuse", spec))
    cases.append(("cdn sends html", {good: payload}, {"cdn_type": "text/html"}, "refuse", spec))
    cases.append(("cdn trickles", {good: payload}, {"trickle": 0.3}, "refuse", spec))
    cases.append(("416 on resume", {good: payload}, {"cdn_416_on_range": True}, "accept", spec))
    cases.append(("drop mid-way", {good: payload}, {"drop_after": 100_000}, "accept", spec))
    cases.append(("corrupt bytes", {good: payload}, {"corrupt": True}, "refuse", spec))
    for bad in ("../../x:Q4_K_M", "/abs/x:Q4_K_M"):
        cases.append((f"repo id {bad}", {good: payload}, {}, "refuse", bad))

    rows = []
    for name, files, faults, expect, pull_spec in cases:
        import shutil

        shutil.rmtree(home / "hf", ignore_errors=True)
        for k in list(registry.records()):
            registry.unregister(k)
        if name == "416 on resume":
            blobs = hub.repo_folder(owner) / "blobs"
            blobs.mkdir(parents=True)
            (blobs / f"{sha}.incomplete").write_bytes(b"stale")
        before = snapshot()
        server = Hub({owner: files})
        for k, v in faults.items():
            setattr(server, k, v)
        outcome: dict = {}

        def pull(outcome=outcome, pull_spec=pull_spec):
            try:
                outcome["pulled"] = hub.pull(pull_spec)
            except EdgechatError as e:
                outcome["error"] = str(e)
            except BaseException as e:  # noqa: BLE001 - counted as a traceback
                outcome["traceback"] = repr(e)

        with server:
            os.environ["HF_ENDPOINT"] = server.url
            t = threading.Thread(target=pull, daemon=True)
            t.start()
            t.join(HANG_S)
        changed = snapshot() != before
        if t.is_alive():
            kind = "hang"
        elif changed:
            kind = "lost"
        elif "traceback" in outcome:
            kind = "traceback"
        elif expect == "accept":
            ok = "pulled" in outcome and outcome["pulled"].path.read_bytes() == payload
            kind = "handled" if ok else "accepted"
        elif "pulled" in outcome or registry.records():
            kind = "accepted"
        else:
            kind = "clean" if "\n" not in outcome["error"] else "traceback"
        rows.append((f"hub {name}", kind))
    return rows


def state_area(w: Worker, home: Path) -> list[tuple[str, str]]:
    from test_hostile_state import (
        BAD_FLAGS,
        BAD_SETTINGS,
        DAMAGED_CONFIG,
        REGISTRIES,
        USER_CATALOGS,
    )

    from edgechat.paths import paths

    p = paths()
    rows = []
    for argv, _ in BAD_FLAGS:
        rows.append((f"flag {' '.join(argv)}", classify(w.run([*argv, "Hi"][: len(argv) + 1]))))
    for key, value, _ in BAD_SETTINGS:
        before = p.config_file.read_bytes() if p.config_file.exists() else None
        res = w.run(["config", "set", key, value])
        after = p.config_file.read_bytes() if p.config_file.exists() else None
        rows.append((f"config set {key} {value}", classify(res, changed=before != after)))
    for content, key in DAMAGED_CONFIG:
        p.config_dir.mkdir(parents=True, exist_ok=True)
        p.config_file.write_bytes(content)
        rows.append((f"config.toml {content[:24]!r}", classify(w.run(["config"]))))
        fixed = w.run(["config", "unset", key])
        rows.append((f"config unset {key} on it", classify(fixed, "accept")))
        p.config_file.unlink(missing_ok=True)
    for content in USER_CATALOGS:
        p.user_catalog.write_bytes(content)
        rows.append((f"models.toml {content[:24]!r}", classify(w.run(["recommend"]))))
    p.user_catalog.unlink(missing_ok=True)
    registry = p.data_dir / "models.json"
    registry.parent.mkdir(parents=True, exist_ok=True)
    for content in REGISTRIES:
        registry.write_bytes(content)
        for argv in (["models", "list"], ["chat", "--model", "a", "Hi"]):
            res = w.run(argv)
            lost = registry.read_bytes() != content  # a damaged file is never overwritten
            rows.append((f"models.json {content[:16]!r} :: {argv[0]}", classify(res, changed=lost)))
    registry.unlink()
    return rows


def db_area(home: Path) -> list[tuple[str, str]]:
    import sqlite3

    from edgechat.tasks import dbopen
    from edgechat.tasks.conversations import Store

    rows = []
    for damage in ("garbage", "truncated", "zeroed-header", "empty", "a folder"):
        folder = home / f"db-{damage}"
        folder.mkdir()
        path = folder / "c.db"
        store = Store(path)
        conv = store.create("kept")
        for i in range(40):
            store.add_message(conv.id, "user", f"message {i} " * 30)
        store.close()
        data = path.read_bytes()
        if damage == "garbage":
            path.write_bytes(os.urandom(len(data)))
        elif damage == "truncated":
            path.write_bytes(data[: len(data) // 3])
        elif damage == "zeroed-header":
            path.write_bytes(b"\0" * 100 + data[100:])
        elif damage == "empty":
            path.write_bytes(b"")
        else:
            path.unlink()
            path.mkdir()
        damaged = path.read_bytes() if path.is_file() else None
        try:
            s = Store(path)
            aside = list(folder.glob("c.db.damaged-*"))
            kept = damaged is None or not damaged or (aside and aside[0].read_bytes() == damaged)
            kind = "handled" if kept else "lost"
            s.close()
        except dbopen.StoreError as e:
            kind = "clean" if "\n" not in str(e) and damage == "a folder" else "accepted"
        except Exception:  # noqa: BLE001
            kind = "traceback"
        rows.append((f"database {damage}", kind))
    # a lock held by another process longer than the busy timeout
    path = home / "locked.db"
    store = Store(path)
    conv = store.create()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3,sys,time;d=sqlite3.connect(sys.argv[1],isolation_level=None);"
         "d.execute('BEGIN EXCLUSIVE');print('x',flush=True);time.sleep(20)", str(path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    holder.stdout.readline()
    try:
        store.add_message(conv.id, "user", "hello")
        kind = "accepted"
    except dbopen.StoreBusy as e:
        kind = "clean" if "\n" not in str(e) else "traceback"
    except sqlite3.Error:
        kind = "traceback"
    holder.kill()
    holder.wait()
    rows.append(("database locked by another process", kind))
    blocker = home / "datafile"
    blocker.write_text("a file")
    try:
        Store(blocker / "c.db")
        kind = "accepted"
    except dbopen.StoreError:
        kind = "clean"
    rows.append(("data dir is a file", kind))
    return rows


def concurrency_area(home: Path) -> list[tuple[str, str]]:
    """Ten `models import` at once: every one must be registered (models.json's lock)."""
    from edgechat.models import registry

    src = registry.starter_model_path()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "edgechat", "models", "import", str(src), "--id", f"m{i}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for i in range(10)
    ]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    got = {k.split(":")[0] for k in registry.records()}
    rows = []
    for i, (p, err) in enumerate(zip(procs, errs, strict=True)):
        if "Traceback" in err:
            kind = "traceback"
        elif p.returncode == 0:
            kind = "handled" if f"m{i}" in got else "lost"
        else:
            kind = "clean"
        rows.append((f"import {i + 1} of 10 at once", kind))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the rows and totals as JSON")
    ap.add_argument("--quick", action="store_true", help="GGUF files through inspect only")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker()
        return 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        os.environ["EDGECHAT_HOME"] = str(home / "edgechat")
        os.environ["HF_HOME"] = str(home / "hf")
        os.environ.pop("HF_TOKEN", None)
        w = Worker()
        try:
            areas = {
                "GGUF files": gguf_area(w, home, args.quick),
                "state and flags": state_area(w, home),
            }
        finally:
            w.close()
        areas["hub"] = hub_area(home)
        areas["database"] = db_area(home)
        areas["models.json at once"] = concurrency_area(home)
    totals = {}
    for area, rows in areas.items():
        counts = {c: 0 for c in COLUMNS}
        for _, kind in rows:
            counts[kind] += 1
        totals[area] = {"inputs": len(rows), **counts}
    all_ = {"inputs": sum(t["inputs"] for t in totals.values())}
    all_ |= {c: sum(t[c] for t in totals.values()) for c in COLUMNS}
    totals["all"] = all_
    if args.json:
        rows = {a: [{"input": n, "outcome": k} for n, k in r] for a, r in areas.items()}
        print(json.dumps({"totals": totals, "rows": rows}, indent=2))
        return 0
    bad = [(a, n, k) for a, r in areas.items() for n, k in r if k not in ("clean", "handled")]
    for area, name, kind in bad:
        print(f"  {kind:<9} {area}: {name!r}")
    head = f"{'area':<22} {'inputs':>6} " + " ".join(f"{c:>9}" for c in COLUMNS)
    print(head)
    print("-" * len(head))
    for area, t in totals.items():
        print(f"{area:<22} {t['inputs']:>6} " + " ".join(f"{t[c]:>9}" for c in COLUMNS))
    print(f"({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
