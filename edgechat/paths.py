"""Where edgechat keeps its files: platformdirs' user dirs for app ``edgechat``.

``EDGECHAT_HOME`` puts everything under one folder instead (tests, portable installs).
Nothing is ever written to the current directory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

APP = "edgechat"


@dataclass(frozen=True)
class Paths:
    config_dir: Path
    data_dir: Path
    cache_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def user_catalog(self) -> Path:
        return self.config_dir / "models.toml"

    def as_dict(self) -> dict[str, str]:
        return {
            "config_dir": str(self.config_dir),
            "config_file": str(self.config_file),
            "user_catalog": str(self.user_catalog),
            "data_dir": str(self.data_dir),
            "cache_dir": str(self.cache_dir),
        }


def paths() -> Paths:
    home = os.environ.get("EDGECHAT_HOME")
    if home:
        root = Path(home).expanduser()
        return Paths(root / "config", root / "data", root / "cache")
    import platformdirs

    return Paths(
        Path(platformdirs.user_config_dir(APP, appauthor=False)),
        Path(platformdirs.user_data_dir(APP, appauthor=False)),
        Path(platformdirs.user_cache_dir(APP, appauthor=False)),
    )


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` readable by this user only (it may hold chats or tokens)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _temp_beside(path: Path) -> tuple[int, Path]:
    """A new 0600 temporary file next to ``path``, its name unique to this writer."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    return fd, Path(name)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` atomically to a 0600 file: a crash leaves the old file or the new one."""
    ensure_private_dir(path.parent)
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file: never a half-written file."""
    from edgechat.errors import EdgechatError

    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        with tmp.open("x", encoding="utf-8") as fh:  # the usual permissions, a unique name
            fh.write(text)
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        raise EdgechatError(
            f"cannot write {path}: {e.strerror or e}; choose another place"
        ) from None
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise


def sha256_of(path: Path, chunk: int = 8 * 1024**2) -> str:
    """A file's SHA-256, read a block at a time (models are gigabytes)."""
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
