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
import re
from pathlib import Path

from edgechat.models.stores import Found, is_gguf

MODEL = "application/vnd.ollama.image.model"
PROJECTOR = "application/vnd.ollama.image.projector"
MANIFEST_LIST = "application/vnd.ollama.manifest.list.v2+json"
_HOSTS = ("registry.ollama.ai", "ollama.com")  # the public registry, old and new names
_DIGEST = re.compile(r"^sha256[:-]([0-9a-fA-F]{64})$")
_MAX_MANIFEST = 1 << 20  # a manifest is a few hundred bytes; never read a model as one


def canonical(name: str) -> tuple[str, str, str, str]:
    """(host, namespace, model, tag) as Ollama completes a short name: ``llama3.2`` is
    registry.ollama.ai/library/llama3.2:latest; ``ollama.com`` is the same registry."""
    text = name.strip().lower()
    tag = "latest"
    last = text.rsplit("/", 1)[-1]
    if ":" in last:
        text, tag = text.rsplit(":", 1)
    parts = [p for p in text.split("/") if p]
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
    try:
        if path.stat().st_size > _MAX_MANIFEST:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _runnable(root: Path, manifest: dict) -> dict | None:
    """The manifest llama.cpp can run: itself, or a list's GGUF child (read from its
    blob when the list only points at it)."""
    if manifest.get("mediaType") != MANIFEST_LIST:
        return manifest
    children = [c for c in manifest.get("manifests") or [] if isinstance(c, dict)]
    children.sort(key=lambda c: (c.get("format") != "gguf", c.get("runner") == "mlx"))
    for child in children:
        if not child.get("layers") and child.get("digest"):
            path = blob(root, child.get("digest"))
            child = (_read_json(path) if path else None) or {}
        if child.get("layers"):
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
            key = canonical(f"{host}/{namespace}/{model}:{tag}")
            found.setdefault(key, (path, short_name(host, namespace, model, tag)))
    return found


def models(root: Path) -> list[Found]:
    """The models in the Ollama store at ``root``."""
    out = []
    for _, (path, name) in sorted(manifests(root).items()):
        manifest = _read_json(path)
        runnable = _runnable(root, manifest) if manifest else None
        if runnable is None:
            out.append(Found("ollama", name, path, (path,), 0, False, None, "unreadable manifest"))
            continue
        layers = [la for la in runnable.get("layers") or [] if isinstance(la, dict)]
        weights = [la for la in layers if la.get("mediaType") == MODEL]
        projectors = [
            blob(root, la.get("digest")) for la in layers if la.get("mediaType") == PROJECTOR
        ]
        if not weights:
            why = (
                "safetensors weights for Ollama's own engine: llama.cpp runs GGUF files"
                if runnable.get("format") == "safetensors" or layers
                else "no weights here (a cloud model?)"
            )
            size = sum(int(la.get("size") or 0) for la in layers)
            out.append(Found("ollama", name, path, (path,), size, False, None, why))
            continue
        file = blob(root, weights[0].get("digest"))
        if file is None:
            out.append(Found("ollama", name, path, (path,), 0, False, None, "bad digest"))
            continue
        size = file.stat().st_size if file.is_file() else int(weights[0].get("size") or 0)
        problem, gguf = "", True
        if not file.is_file():
            problem = "its weights are not in the store (an unfinished pull?)"
        elif not is_gguf(file):
            gguf, problem = False, "its weights are not a GGUF file"
        projector = projectors[0] if projectors and projectors[0] else None
        out.append(Found("ollama", name, file, (file,), size, gguf, projector, problem))
    return out
