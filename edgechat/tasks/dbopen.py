"""Open the conversation database whatever state it is found in, and say what happened.

A database locked by another process waits (SQLite's busy timeout), then fails with a
message the app can show while it keeps the user's text; a damaged or truncated file
is moved aside (``conversations.db.damaged-<time>``) and a new one started, with a
notice; a read-only place or a data dir that is a file says which folder to fix.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from edgechat.errors import EdgechatError

Schema = str | Callable[[sqlite3.Connection], None]
BUSY_S = 3.0  # how long one statement waits for another process's lock


class StoreError(EdgechatError):
    """The conversation database cannot be used: the message says why and what to do."""


class StoreBusy(StoreError):
    """Another process holds the database's lock; trying again later will work."""


def _damaged(exc: sqlite3.DatabaseError) -> bool:
    text = str(exc).lower()
    return any(w in text for w in ("not a database", "malformed", "corrupt", "disk image"))


def explain(exc: sqlite3.Error, path: Path) -> StoreError:
    """One line for what SQLite raised."""
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return StoreBusy(
            f"the conversation database {path} is locked by another program (another "
            "edgechat?); nothing was lost: try again in a moment"
        )
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        return StoreError(
            f"cannot write conversations in {path.parent} (read-only?): make that folder "
            "writable, or set EDGECHAT_HOME to a folder you can write"
        )
    if "disk is full" in text or "full" in text:
        return StoreError(f"the disk holding {path} is full: free some space")
    return StoreError(f"the conversation database {path} failed ({exc}); try again")


def guarded(method):
    """Turn SQLite's exceptions in a Store method into StoreError lines."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise explain(exc, self.path) from None

    return wrapper


def open_db(path: Path, schema: Schema) -> tuple[sqlite3.Connection, str | None]:
    """A connection with the schema in place, and a notice when the old file was damaged.
    ``schema``: a script, or a function that brings the database up to date."""
    from edgechat.paths import ensure_private_dir, folder_problem, home_fix, os_problem, shown

    try:
        ensure_private_dir(path.parent)
    except (FileExistsError, NotADirectoryError):
        raise StoreError(
            f"{_file_in_the_way(path.parent)} is a file where edgechat keeps its data folder: "
            "move it aside, or set EDGECHAT_HOME to another folder"
        ) from None
    except PermissionError:
        raise StoreError(
            f"cannot create {shown(path.parent)}: permission denied; fix that folder's "
            "permissions or set EDGECHAT_HOME to a folder you can write"
        ) from None
    except OSError as exc:  # /proc, a symlink loop, a name too long, a read-only disk ...
        why = folder_problem(path.parent) or os_problem(exc)
        raise StoreError(
            f"cannot keep conversations in {shown(path.parent)}: {why}; {home_fix()}"
        ) from None
    try:
        if os.path.lexists(path) and not path.is_file():
            raise StoreError(f"{shown(path)} is not a file; move it aside and start edgechat again")
    except OSError as exc:
        raise StoreError(f"cannot use {shown(path)}: {os_problem(exc)}; {home_fix()}") from None
    try:
        return _connect(path, schema), None
    except sqlite3.DatabaseError as exc:
        if not _damaged(exc):
            raise explain(exc, path) from None
    aside = _move_aside(path)
    try:
        return _connect(path, schema), (
            f"the conversation database was damaged; it was moved to {aside} and a new one started"
        )
    except sqlite3.Error as exc:
        raise explain(exc, path) from None


def _connect(path: Path, schema: Schema) -> sqlite3.Connection:
    fresh = not path.exists()
    # The app writes from its worker threads too; sqlite serialises, we share one handle.
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=BUSY_S)
    try:
        if fresh:
            os.chmod(path, 0o600)
        db.execute("PRAGMA journal_mode=WAL")
        # A commit reaches the WAL file without waiting for the disk: what the app wrote
        # survives the app's own crash (a native fault), and only a power cut may lose
        # the last second. The reply is saved as it streams, about twice a second: 0.8
        # ms a save here against 10 ms with a disk sync each (FULL), on the UI thread.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        if not fresh:
            row = db.execute("PRAGMA quick_check(1)").fetchone()
            if not row or row[0] != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed ({row})")
        if callable(schema):
            schema(db)
        else:
            db.executescript(schema)
    except BaseException:
        db.close()
        raise
    for side in ("-wal", "-shm"):
        extra = Path(f"{path}{side}")
        if extra.exists():
            with contextlib.suppress(OSError):
                os.chmod(extra, 0o600)
    return db


def _move_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    for side in ("", "-wal", "-shm"):
        src = Path(f"{path}{side}")
        if src.exists():
            try:
                os.replace(src, Path(f"{aside}{side}"))
            except OSError as exc:
                raise StoreError(
                    f"{path} is damaged and cannot be moved aside ({exc.strerror}); move it "
                    "yourself and start edgechat again"
                ) from None
    return aside


def _file_in_the_way(folder: Path) -> Path:
    """The first part of ``folder``'s path that exists and is not a folder."""
    for part in [*reversed(folder.parents), folder]:
        if part.exists() and not part.is_dir():
            return part
    return folder
