"""The hub cache's own files, made as huggingface_hub makes them, and nothing else touched.

Snapshot entries are relative links to blobs; ``refs/main`` names the commit; a
lock in ``.locks`` (where huggingface_hub keeps its own) lets one pull at a time
fetch a file. An entry already there is replaced only when it is a link into this
repo's blobs: a file edgechat did not make is left alone and named in the error.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path

from edgechat.facts.device import models_dir
from edgechat.models import hubcheck
from edgechat.models.hub import HubError, RemoteFile


@contextlib.contextmanager
def pull_lock(folder: Path, f: RemoteFile):
    """One pull of a file at a time, across processes; a second one says so at once."""
    from filelock import FileLock, Timeout

    locks = models_dir() / ".locks" / folder.name
    locks.mkdir(parents=True, exist_ok=True)
    key = f.sha256 or hashlib.sha256(f.name.encode()).hexdigest()
    lock = FileLock(str(locks / f"{key.lower()}.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise HubError(
            f"another pull is downloading {f.name} right now; wait for it to finish "
            "(or stop it), then pull again"
        ) from None
    try:
        yield
    finally:
        lock.release()


def link(folder: Path, commit: str, name: str, blob: Path) -> Path:
    """The snapshot entry huggingface_hub would make: a relative link to the blob.

    An entry already there is replaced only when it is a link into this repo's blobs
    (what edgechat or huggingface_hub made); anything else is left alone.
    """
    snapshot = folder / "snapshots" / commit
    pointer = snapshot / name
    pointer.parent.mkdir(parents=True, exist_ok=True)
    hubcheck.inside(pointer.parent, snapshot)
    if pointer.is_symlink() and pointer.resolve() == blob.resolve():
        return ref(folder, commit, pointer)
    if pointer.is_symlink() and pointer.resolve().parent == (folder / "blobs").resolve():
        pointer.unlink()
    elif pointer.is_symlink() or pointer.exists():
        raise HubError(
            f"{pointer} is already there and edgechat did not make it; move it aside and pull again"
        )
    try:
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    except OSError:  # no symlinks here (some Windows setups): a copy, as huggingface_hub does
        shutil.copyfile(blob, pointer)
    return ref(folder, commit, pointer)


def ref(folder: Path, commit: str, pointer: Path) -> Path:
    refs = folder / "refs"
    refs.mkdir(exist_ok=True)
    main = refs / "main"
    if main.is_symlink() or (main.exists() and not main.is_file()):
        raise HubError(f"{main} is not a file edgechat made; move it aside and pull again")
    main.write_text(commit)
    return pointer
