"""Models other tools already keep on this disk: Ollama's store, LM Studio's folders,
llama.cpp's download cache and GGUFs in the Hugging Face cache that edgechat did not pull.

Read only: this module lists, reads headers' first bytes and follows manifests; it
never moves, renames or deletes a file of theirs (``models import --from`` registers
one where it lies, and ``models rm`` only forgets that record). Each store is found
where its own tool looks for it, environment variables first.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgechat.errors import EdgechatError
from edgechat.models.storepaths import hf_roots, llamacpp_root, lmstudio_roots, ollama_roots

STORES = {
    "ollama": "Ollama's store",
    "lmstudio": "LM Studio's models folder",
    "llamacpp": "llama.cpp's cache",
    "hf": "the Hugging Face cache",
}
# llama.cpp's split files: NAME-00001-of-00003.gguf (gguf-split, and how the hub shards).
SPLIT = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
# GGUFs that are not a model to chat with: vision projectors and draft heads (as
# llama.cpp's own cache listing skips them).
_PROJECTOR = re.compile(r"mmproj", re.IGNORECASE)
_NOT_A_MODEL = re.compile(r"^(mtp|eagle3|dflash|dspark)-", re.IGNORECASE)
_MAX_DEPTH = 6  # publisher/repo/file is three; a few more for hand-made trees
# A quant at the end of a file name (the id gets the header's own after a colon).
_QUANT_SUFFIX = re.compile(r"[-._](i?q\d[a-z0-9_]*|[bf]?f16|f32|bf16)$", re.IGNORECASE)


@dataclass(frozen=True)
class Found:
    """One model another tool keeps here."""

    store: str  # a key of STORES
    name: str  # as that tool names it: llama3.2:latest, publisher/repo/file.gguf, repo/file
    path: Path  # the file to load: the model, or the first part of a split one
    files: tuple[Path, ...]  # every file it is made of
    size: int
    gguf: bool = True  # False: weights llama.cpp cannot run (safetensors, MLX)
    projector: Path | None = None  # a multimodal projector beside it (edgechat chats in text)
    problem: str = ""  # why it cannot be imported; '' when it can

    @property
    def usable(self) -> bool:
        return self.gguf and not self.problem

    @property
    def suggested_id(self) -> str:
        """An edgechat id for it (the quant is added from the header on import)."""
        base = self.name
        if self.store == "ollama":
            base = base.rsplit("/", 1)[-1]
            model, _, tag = base.partition(":")
            base = model if tag in ("", "latest") else f"{model}-{tag}"
        else:
            base = Path(base).name
            split = SPLIT.match(base)
            base = split.group("prefix") if split else re.sub(r"\.gguf$", "", base, flags=re.I)
            # llama.cpp's older cache: OWNER_REPO-GGUF_FILE.gguf; the file names the model.
            base = re.split(r"-gguf_", base, flags=re.IGNORECASE)[-1]
            base = _QUANT_SUFFIX.sub("", base) or base
        return re.sub(r"[^a-z0-9._-]+", "-", base.lower()).strip("-.") or "model"

    def as_dict(self) -> dict:
        return {
            "store": self.store,
            "name": self.name,
            "path": str(self.path),
            "files": [str(f) for f in self.files],
            "size": self.size,
            "gguf": self.gguf,
            "projector": str(self.projector) if self.projector else None,
            "problem": self.problem,
        }


# -- reading folders ------------------------------------------------------------------------


def is_gguf(path: Path) -> bool:
    """Is it a regular file that starts with GGUF's magic? (Ollama's blobs carry no
    extension.) A pipe or a device is not, and is never waited on or read."""
    from edgechat.paths import open_user_file

    try:
        with open_user_file(path, EdgechatError) as fh:
            return fh.read(4) == b"GGUF"
    except (EdgechatError, OSError):
        return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def walk(root: Path, skip: re.Pattern[str] | None = None) -> Iterator[tuple[Path, list[str]]]:
    """(folder, file names) under ``root``, following links to folders only while they
    stay in the store (``/proc/<pid>/cwd`` is a way out to the whole disk) and without
    looping; folders named like ``skip`` are left out."""
    seen: set[tuple[int, int]] = set()
    try:
        inside = root.resolve()
    except (OSError, RuntimeError):
        return
    for folder, dirs, files in os.walk(root, followlinks=True):
        here = Path(folder)
        try:
            st = here.stat()
            real = here.resolve()
        except (OSError, RuntimeError):
            dirs[:] = []
            continue
        depth = len(here.relative_to(root).parts)
        out = real != inside and inside not in real.parents
        if (st.st_dev, st.st_ino) in seen or depth > _MAX_DEPTH or out:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (skip and skip.match(d)))
        yield here, sorted(files)


def group_folder(store: str, root: Path, folder: Path, names: list[str]) -> list[Found]:
    """The models among one folder's GGUF files: split parts joined, projectors attached
    to the models beside them, draft heads left out."""
    ggufs = [n for n in names if n.lower().endswith(".gguf")]
    projectors = sorted((n for n in ggufs if _PROJECTOR.search(n)), key=lambda n: "f16" not in n)
    projector = folder / projectors[0] if projectors else None
    models: dict[str, list[str]] = {}
    for name in ggufs:
        if _PROJECTOR.search(name) or _NOT_A_MODEL.match(name):
            continue
        split = SPLIT.match(name)
        key = f"{split.group('prefix')}|{split.group('count')}" if split else name
        models.setdefault(key, []).append(name)
    found = []
    for _, parts in sorted(models.items()):
        parts.sort()
        first = folder / parts[0]
        files = tuple(folder / p for p in parts)
        problem = ""
        split = SPLIT.match(parts[0])
        if split:
            count = int(split.group("count"))
            numbers = {int(SPLIT.match(p).group("no")) for p in parts}  # type: ignore[union-attr]
            if numbers != set(range(1, count + 1)):
                problem = f"only {len(numbers)} of its {count} parts are here"
        gguf = is_gguf(first)
        if not gguf and not problem:
            problem = "it does not start like a GGUF file (an unfinished download?)"
        name = str(first.relative_to(root)) if root in first.parents else first.name
        size = sum(_size(f) for f in files)
        found.append(Found(store, name, first, files, size, gguf, projector, problem))
    return found


def _folder_store(store: str, roots: list[Path], skip: re.Pattern[str] | None) -> list[Found]:
    found: list[Found] = []
    for root in _existing(roots):
        for folder, names in walk(root, skip):
            found += group_folder(store, root, folder, names)
            if store == "lmstudio" and not any(n.lower().endswith(".gguf") for n in names):
                found += _weights_folder(store, root, folder, names)
    return found


def _weights_folder(store: str, root: Path, folder: Path, names: list[str]) -> list[Found]:
    """A folder of safetensors weights (LM Studio's MLX models): listed, not runnable."""
    weights = [folder / n for n in names if n.endswith(".safetensors")]
    if not weights or "config.json" not in names:
        return []
    name = str(folder.relative_to(root))
    why = (
        "safetensors weights (an MLX or transformers model): llama.cpp runs GGUF files; "
        "convert it with llama.cpp's convert_hf_to_gguf.py or get its GGUF version"
    )
    size = sum(_size(w) for w in weights)
    return [Found(store, name, weights[0], tuple(weights), size, False, None, why)]


# The kernel's own trees: folders to read from, never a store of models.
_PSEUDO = tuple(Path(p) for p in ("/proc", "/sys", "/dev"))


def _existing(roots: list[Path]) -> list[Path]:
    """The roots that are folders, each once (two names for one folder count once), and
    none in the kernel's trees (LLAMA_CACHE=/proc names no store)."""
    out, seen = [], set()
    for root in roots:
        try:
            if not root.is_dir():
                continue
            real = root.resolve()
        except (OSError, RuntimeError):
            continue
        if any(real == p or p in real.parents for p in _PSEUDO):
            continue
        if real not in seen:
            seen.add(real)
            out.append(root)
    return out


# -- the stores --------------------------------------------------------------------------------


def lmstudio() -> list[Found]:
    return _folder_store("lmstudio", lmstudio_roots(), None)


def llamacpp() -> list[Found]:
    """Flat GGUFs of older `llama-cli -hf` runs and Docker models (owner_repo_file.gguf);
    the hub-layout folders some versions keep there are the Hugging Face cache's."""
    return _folder_store("llamacpp", [llamacpp_root()], re.compile(r"^(models|datasets)--"))


def ollama() -> list[Found]:
    from edgechat.models import ollama as store

    found: list[Found] = []
    for root in _existing(ollama_roots()):
        found += store.models(root)
    return found


def hf() -> list[Found]:
    from edgechat.models import hfcache

    found: list[Found] = []
    for root in _existing(hf_roots()):
        found += hfcache.models(root)
    return found


_READERS = {"ollama": ollama, "lmstudio": lmstudio, "llamacpp": llamacpp, "hf": hf}


def discover(stores: list[str] | None = None) -> list[Found]:
    """Every model the other tools keep here (``stores``: only those), nothing of
    edgechat's own: models it pulled or imported are left out."""
    mine = _registered_paths()
    found = []
    for store in stores or list(STORES):
        for f in _READERS[store]():
            if _real(f.path) not in mine:
                found.append(f)
    return found


def _real(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path


def _registered_paths() -> set[Path]:
    from edgechat.models import registry

    paths = set()
    for record in registry.records().values():
        for name in [record.get("path"), *(record.get("files") or [])]:
            if isinstance(name, str) and name:
                paths.add(_real(Path(name)))
    return paths


def find(store: str, name: str) -> Found:
    """The model ``name`` in ``store``; refuses with what is there when it is not found
    or cannot be run."""
    if store not in STORES:
        raise EdgechatError(f"unknown store '{store}'; choose one of {', '.join(STORES)}")
    if not name.strip():
        raise EdgechatError(
            f"give the name of a model in {STORES[store]}: `edgechat models list --all` lists them"
        )
    every = _READERS[store]()
    hits = _matches(store, name, every)
    if len(hits) > 1:
        names = ", ".join(f.name for f in hits[:8])
        raise EdgechatError(f"'{name}' matches {len(hits)} models ({names}); give its full name")
    if not hits:
        names = ", ".join(f.name for f in every[:12]) or "none"
        more = f" (and {len(every) - 12} more)" if len(every) > 12 else ""
        raise EdgechatError(
            f"no model '{name}' in {STORES[store]}; it holds: {names}{more}. "
            "`edgechat models list --all` lists every store"
        )
    match = hits[0]
    if not match.usable:
        raise EdgechatError(f"{match.name} in {STORES[store]} cannot be used: {match.problem}")
    return match


def _matches(store: str, name: str, every: list[Found]) -> list[Found]:
    """By its full name (Ollama's short forms completed as Ollama does), else by file
    name, else by the folder or repository it is in."""
    if store == "ollama":
        from edgechat.models.ollama import canonical

        wanted = canonical(name)
        return [f for f in every if canonical(f.name) == wanted]
    text = name.strip().rstrip("/").lower()
    hits = [f for f in every if f.name.lower() == text]
    hits = hits or [f for f in every if f.path.name.lower() == text]
    return hits or [f for f in every if f.name.lower().startswith(text + "/")]


def adopt(store: str, name: str, model_id: str | None = None) -> dict:
    """Register a model another tool keeps, where it lies (never copied); returns the
    record with its id. Its record names the store, so `models rm` only forgets it."""
    from edgechat.models import registry

    found = find(store, name)
    data = registry.records()
    real = _real(found.path)
    for key, record in data.items():
        if isinstance(record.get("path"), str) and _real(Path(record["path"])) == real:
            raise EdgechatError(f"{found.name} is already imported as {key}")
    base = found.suggested_id
    taken = [k.lower() for k in [*data, registry.STARTER_ID]]
    if not model_id and any(k.startswith(f"{base}:") for k in taken):
        base = f"{base}-{store}"  # beside a model of the same name, never over it
    origin = {
        "source": store,
        "store_name": found.name,
        "files": [str(f) for f in found.files],
        "size": found.size,
    }
    if found.projector:
        origin["projector"] = str(found.projector)
    return registry.import_file(found.path, model_id or base, origin=origin)
