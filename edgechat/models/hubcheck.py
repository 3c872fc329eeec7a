"""Check what the hub says before it names anything on disk.

A hub listing is input from the network: a file name ``../../.bashrc``, a commit id
``../x`` or an ETag shaped like a path would otherwise become paths under the cache
and write, link or delete outside it. Every name, commit and digest passes here
first, and every path built from them must resolve inside its folder.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from edgechat.errors import EdgechatError

_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_NAME_PART = re.compile(r"[^\x00-\x1f\x7f\\:*?\"<>|]+")
MAX_FILE_SIZE = 2 * 1024**4  # 2 TiB: no single GGUF file (or split part) is near this


class UnsafeListing(EdgechatError):
    """The hub returned something that cannot be a real listing."""


def repo(name: str) -> str:
    """An ``owner/name`` repo id, or a one-line refusal."""
    if not _REPO.fullmatch(name or "") or ".." in name:
        raise EdgechatError(
            f"'{name}' is not a hub repo id: use owner/name (letters, digits, '.', '_', '-')"
        )
    return name


def parse_spec(spec: str) -> tuple[str | None, str, str | None]:
    """``ID[:QUANT]`` or ``owner/repo[:QUANT]`` -> (catalog id or None, repo or id, quant)."""
    name, _, quant = spec.partition(":")
    quant = {"FP16": "F16", "FP32": "F32"}.get(quant.upper(), quant.upper()) or None
    if "/" in name:
        return None, repo(name), quant
    return name.lower(), name.lower(), quant


def quant(name: str | None, offered: list[str] | tuple[str, ...] | None, repo_id: str) -> None:
    """A quant no llama.cpp file type is called (``:Q9``) is a typo: said before the hub
    is asked, with the quants there are."""
    from edgechat.facts.ggufcheck import quant_names

    if name is None or name in quant_names():
        return
    offers = f"it offers {', '.join(offered)}" if offered else "name one it offers, like Q4_K_M"
    raise EdgechatError(f"{name} is not a quant type llama.cpp knows; {repo_id}: {offers}")


def commit(sha, repo_id: str) -> str:
    if not isinstance(sha, str) or not _HEX40.fullmatch(sha):
        raise UnsafeListing(
            f"the hub's listing of {repo_id} has no valid commit id ({_show(sha)}); "
            "it is not a Hugging Face hub, or it is broken: check HF_ENDPOINT"
        )
    return sha


def digest(value, what: str) -> str:
    """A SHA-256 as 64 lowercase hex digits (ETags come quoted, sometimes ``W/``)."""
    if isinstance(value, str):
        value = value.strip().removeprefix("W/").strip('"').lower()
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise UnsafeListing(
            f"the hub gave no valid SHA-256 for {what} ({_show(value)}), so it cannot be "
            "verified or stored; it is not a Hugging Face hub, or it is broken"
        )
    return value


def file_name(name, repo_id: str) -> str:
    """A relative POSIX path inside the repo: no '..', no absolute path, no odd characters."""
    ok = isinstance(name, str) and 0 < len(name) <= 1024 and not name.startswith("/")
    parts = PurePosixPath(name).parts if ok else ()
    ok = ok and all(p not in (".", "..") and _NAME_PART.fullmatch(p) for p in parts)
    ok = ok and len(parts) == len([p for p in name.split("/")])  # no '//' or trailing '/'
    if not ok:
        raise UnsafeListing(
            f"the hub's listing of {repo_id} names a file {_show(name)}, which is not a "
            "plain relative path; refusing to pull it"
        )
    return name


def size(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UnsafeListing(f"the hub lists no valid size for {name} ({_show(value)})")
    if value > MAX_FILE_SIZE:
        raise UnsafeListing(
            f"the hub lists {name} as {value:,} bytes, which no model file is; "
            "it is not a Hugging Face hub, or it is broken"
        )
    return value


def inside(path: Path, folder: Path) -> Path:
    """``path`` (resolved) if it lies inside ``folder`` (resolved), else a refusal."""
    real, root = path.resolve(), folder.resolve()
    if real != root and root not in real.parents:
        raise UnsafeListing(f"{path} would land outside {folder}; refusing to write there")
    return path


def _show(value) -> str:
    from edgechat.text import clean

    return clean(repr(value))[:80]
