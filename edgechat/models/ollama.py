"""Ollama's model store, read as Ollama lays it out (read only).

``<models>/manifests/<host>/<namespace>/<model>/<tag>`` is a JSON image manifest
(schema 2) whose layers point at ``<models>/blobs/sha256-<hex>``; the layer of media
type ``application/vnd.ollama.image.model`` is a GGUF file without the extension, a
``...image.projector`` layer a vision projector. Newer Ollama keeps its names in
``manifests-v2`` too (host ``ollama.com``; the entry links to a manifest blob) and may
name a manifest list whose children are per-runner manifests. ``llama3.2`` means
``registry.ollama.ai/library/llama3.2:latest``.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

from edgechat.errors import EdgechatError
from edgechat.models.stores import Found, is_gguf
from edgechat.paths import what_it_is
from edgechat.text import clean

MODEL = "application/vnd.ollama.image.model"
PROJECTOR = "application/vnd.ollama.image.projector"
MANIFEST_LIST = "application/vnd.ollama.manifest.list.v2+json"
_HOSTS = ("registry.ollama.ai", "ollama.com")  # the public registry, old and new names
_DIGEST = re.compile(r"^sha256[:-]([0-9a-fA-F]{64})$")
_MAX_MANIFEST = 1 << 20  # a manifest is a few hundred bytes; never read a model as one


def canonical(name: str) -> tuple[str, str, str, str]:
    """(host, namespace, model, tag) as Ollama completes a short name: ``llama3.2`` is
    registry.ollama.ai/library/llama3.2:latest; ``ollama.com`` is the same registry.
    A name with no model in it (``""``, ``/``, ``:tag``) is an EdgechatError."""
    text = name.strip().lower()
    tag = "latest"
    last = text.rsplit("/", 1)[-1]
    if ":" in last:
        text, tag = text.rsplit(":", 1)
    parts = [p for p in text.split("/") if p]
    if not parts or not tag:
        raise EdgechatError(
            f"'{clean(name)}' names no Ollama model; give one like llama3.2 or llama3.2:1b "
            "(`edgechat models list --all` lists them)"
        )
    if len(parts) == 1:
        parts = ["registry.ollama.ai", "library", *parts]
    elif len(parts) == 2:
        parts = ["registry.ollama.ai", *parts]
    host = "registry.ollama.ai" if parts[0] in _HOSTS else parts[0]
    return host, "/".join(parts[1:-1]), parts[-1], tag


def short_name(host: str, namespace: str, model: str, tag: str) -> str:
    """As `ollama list` shows it: llama3.2:latest, user/model:tag, hf.co/owner/repo:tag."""
    if host in _HOSTS:
        return f"{model}:{tag}" if namespace == "library" else f"{namespace}/{model}:{tag}"
    return f"{host}/{namespace}/{model}:{tag}"


def blob(root: Path, digest: object) -> Path | None:
    """The blob file for a layer's digest; None for a digest that is not a sha256 (a
    manifest is data: it never names a path). Older Ollama named blobs sha256:<hex>."""
    m = _DIGEST.match(digest) if isinstance(digest, str) else None
    if not m:
        return None
    path = root / "blobs" / f"sha256-{m.group(1).lower()}"
    old = root / "blobs" / f"sha256:{m.group(1).lower()}"
    return old if not path.exists() and old.exists() else path


def _read_json(path: Path) -> dict | None:
    """A manifest: a regular file of at most a megabyte (never a pipe, a device or a
    model read as one), holding a JSON table; None for anything else."""
    from edgechat.paths import read_user_file

    try:
        data = json.loads(read_user_file(path, _MAX_MANIFEST, EdgechatError).decode("utf-8"))
    except (EdgechatError, ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return data if isinstance(data, dict) else None


def _list(value) -> list[dict]:
    """The tables of a list a manifest holds (``layers``, ``manifests``); anything else
    (``5``, a string, a table) holds none."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _size(value) -> int:
    """A layer's size as a manifest writes it; 0 for what is not one (``"abc"``,
    ``1e400``, ``-1``, ``true``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value) if value == value and 0 <= value < 1 << 62 else 0


def _runnable(root: Path, manifest: dict) -> dict | None:
    """The manifest llama.cpp can run: itself, or a list's GGUF child (read from its
    blob when the list only points at it)."""
    if manifest.get("mediaType") != MANIFEST_LIST:
        return manifest
    children = _list(manifest.get("manifests"))
    children.sort(key=lambda c: (c.get("format") != "gguf", c.get("runner") == "mlx"))
    for child in children:
        if not _list(child.get("layers")) and child.get("digest"):
            path = blob(root, child.get("digest"))
            child = (_read_json(path) if path else None) or {}
        if _list(child.get("layers")):
            return child
    return None


def manifests(root: Path) -> dict[tuple[str, str, str, str], tuple[Path, str]]:
    """Every named manifest: (host, namespace, model, tag) -> (its file, its name as
    `ollama list` shows it); a name in manifests-v2 wins over the same name in the
    older folder, as in Ollama."""
    found: dict[tuple[str, str, str, str], tuple[Path, str]] = {}
    for folder in ("manifests-v2", "manifests"):
        base = root / folder
        if not base.is_dir():
            continue
        for path in sorted(base.glob("*/*/*/*")):
            if path.is_dir():
                continue
            host, namespace, model, tag = path.relative_to(base).parts
            try:
                key = canonical(f"{host}/{namespace}/{model}:{tag}")
            except EdgechatError:
                continue
            found.setdefault(key, (path, short_name(host, namespace, model, tag)))
    return found


def models(root: Path) -> list[Found]:
    """The models in the Ollama store at ``root``: a manifest that cannot be used is one
    entry saying why, and the others are listed."""
    out = []
    for _, (path, name) in sorted(manifests(root).items()):
        try:
            out.append(_model(root, path, name))
        except (OSError, ValueError, TypeError, RecursionError) as e:  # a net: never a traceback
            why = f"unreadable manifest ({type(e).__name__})"
            out.append(Found("ollama", name, path, (path,), 0, False, None, why))
    return out


def _model(root: Path, path: Path, name: str) -> Found:
    manifest = _read_json(path)
    runnable = _runnable(root, manifest) if manifest else None
    if runnable is None:
        return Found("ollama", name, path, (path,), 0, False, None, "unreadable manifest")
    layers = _list(runnable.get("layers"))
    weights = [la for la in layers if la.get("mediaType") == MODEL]
    projectors = [blob(root, la.get("digest")) for la in layers if la.get("mediaType") == PROJECTOR]
    if not weights:
        why = (
            "safetensors weights for Ollama's own engine: llama.cpp runs GGUF files"
            if runnable.get("format") == "safetensors" or layers
            else "no weights here (a cloud model?)"
        )
        size = sum(_size(la.get("size")) for la in layers)
        return Found("ollama", name, path, (path,), size, False, None, why)
    file = blob(root, weights[0].get("digest"))
    if file is None:
        return Found("ollama", name, path, (path,), 0, False, None, "bad digest")
    problem, gguf = "", True
    try:
        st = os.stat(file)
    except OSError:
        st = None
    if st is None:
        problem = "its weights are not in the store (an unfinished pull?)"
    elif not stat.S_ISREG(st.st_mode):
        gguf, problem = False, f"its weights are {what_it_is(st.st_mode)}, not a file"
    elif not is_gguf(file):
        gguf, problem = False, "its weights are not a GGUF file"
    size = st.st_size if st is not None and not problem else _size(weights[0].get("size"))
    projector = projectors[0] if projectors and projectors[0] else None
    return Found("ollama", name, file, (file,), size, gguf, projector, problem)
