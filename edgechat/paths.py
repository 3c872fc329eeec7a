"""Where edgechat keeps its files: platformdirs' user dirs for app ``edgechat``.

``EDGECHAT_HOME`` puts everything under one folder instead (tests, portable installs).
Nothing is ever written to the current directory unless the user names it.

Paths a user types go through ``user_file`` (to read) and ``output_path`` (to write):
every error the file system can raise for them becomes one line that says what to do.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
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
        if not root.is_absolute():  # it would follow whatever folder a command runs in
            from edgechat.errors import ConfigError

            raise ConfigError(
                f"EDGECHAT_HOME is a relative path ({shown(home)}): edgechat's files would "
                "be in another place from every folder it runs in; set it to a whole path, "
                f"like {shown(Path.cwd() / root)}"
            )
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


def home_fix() -> str:
    """What to do about one of edgechat's own folders that cannot be used."""
    if os.environ.get("EDGECHAT_HOME"):
        return "set EDGECHAT_HOME to a folder you can write"
    return "fix that folder, or set EDGECHAT_HOME to a folder you can write"


def folder_problem(folder: Path) -> str | None:
    """Why edgechat could not keep files in ``folder`` (made when first needed), or None.
    Tried, not guessed from permission bits: root ignores them, and /proc or a read-only
    disk refuses whatever they say. Nothing is left behind."""
    try:
        os.stat(folder)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:  # a name too long, a loop; a file in the way: below
        if not (isinstance(exc, OSError) and exc.errno == errno.ENOTDIR):
            return f"cannot use {shown(folder)}: {os_problem(exc)}"
    existing = folder
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    try:
        mode = os.stat(existing).st_mode
    except (OSError, ValueError) as exc:  # a symlink loop, a name too long ...
        return f"cannot use {shown(existing)}: {os_problem(exc)}"
    if not stat.S_ISDIR(mode):
        kind = "a file" if stat.S_ISREG(mode) else what_it_is(mode)
        return f"{shown(existing)} is {kind}, not a folder"
    try:
        if existing == folder:
            with tempfile.TemporaryFile(dir=folder):
                pass
        else:
            os.rmdir(tempfile.mkdtemp(dir=existing))
    except OSError as exc:
        if existing == folder:
            return f"cannot write in {shown(folder)}: {os_problem(exc)}"
        why = "it takes no new folders" if exc.errno == errno.ENOENT else os_problem(exc)
        return f"cannot create {shown(folder)}: {shown(existing)} refuses ({why})"
    return None


def write_private(path: Path, text: str) -> None:
    """Write ``text`` atomically to a 0600 file: a crash leaves the old file or the new one."""
    from edgechat.errors import EdgechatError

    try:
        ensure_private_dir(path.parent)
        fd, tmp = _temp_beside(path)
    except OSError as exc:  # EDGECHAT_HOME a file, under /proc, read-only ...
        why = folder_problem(path.parent) or os_problem(exc)
        raise EdgechatError(f"cannot write {shown(path)}: {why}; {home_fix()}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # a full disk ...
        tmp.unlink(missing_ok=True)
        raise EdgechatError(f"cannot write {shown(path)}: {os_problem(exc)}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file: never a half-written file."""
    from edgechat.errors import EdgechatError

    tmp = None
    try:  # the folder must exist: a typo in a path is not a new folder tree
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


# -- paths the user gives ------------------------------------------------------------------

_WHY = {
    errno.ENOENT: "no such file or folder",
    errno.ELOOP: "it is a symlink loop (or links too deep)",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENAMETOOLONG: "the name is too long",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "the disk is full",
    errno.EIO: "the disk could not read it",
}


def shown(path: str | Path, width: int = 120) -> str:
    """A path for a one-line message: a very long one keeps its start and its end."""
    text = str(path)
    return text if len(text) <= width else f"{text[: width // 2 - 1]}…{text[-(width // 2) :]}"


def os_problem(exc: OSError | ValueError) -> str:
    """What an OSError means, in words (not errno's); a ValueError: a NUL in the name."""
    if not isinstance(exc, OSError):
        return "the name holds a NUL character"
    return _WHY.get(exc.errno or 0) or exc.strerror or str(exc)


def what_it_is(mode: int) -> str:
    """A file that is not a regular one, in words: what a message says it is."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "something else"


def user_file(
    text: str | Path,
    what: str = "file",
    error: type[Exception] | None = None,
    missing: str = "no such file: {path}",
) -> Path:
    """The file a user named, checked with one ``stat``: a regular file, or ``error``
    (InputError) with one line for whatever the file system says: missing, a symlink
    loop, permissions, a folder, a name too long, a pipe or a device."""
    from edgechat.errors import InputError

    error = error or InputError
    path = Path(text).expanduser()
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(missing.format(path=shown(path))) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        raise error(f"cannot use {shown(path)}: {os_problem(exc)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{shown(path)} is a folder; give a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{shown(path)} is {what_it_is(st.st_mode)}, not a regular file; give a {what}")
    return path


def open_user_file(path: str | Path, error: type[Exception] | None = None):
    """``path`` opened for reading: the one way edgechat opens a file it did not write
    (a user's, another tool's, one in a work folder that may have changed). Opened
    without blocking (a FIFO there does not hang) and checked once open to be a regular
    file (not /dev/zero, a folder or a socket put there since it was listed), with the
    same one-line errors as ``user_file``."""
    from edgechat.errors import InputError

    error = error or InputError
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except (OSError, ValueError) as exc:
        raise error(f"cannot read {shown(path)}: {os_problem(exc)}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{shown(path)} is {what_it_is(mode)}, not a regular file")
        return os.fdopen(fd, "rb")  # O_NONBLOCK means nothing to a regular file
    except BaseException:
        os.close(fd)
        raise


def read_user_file(path: str | Path, limit: int, error: type[Exception] | None = None) -> bytes:
    """A small file edgechat did not write (a manifest, a setting, a legacy matrix), read
    whole through ``open_user_file`` but never past ``limit`` bytes."""
    from edgechat.errors import InputError

    error = error or InputError
    with open_user_file(path, error) as fh:
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise error(f"cannot read {shown(path)}: {os_problem(exc)}") from None
    if len(data) > limit:
        raise error(f"{shown(path)} is larger than such a file can be ({limit:,} bytes at most)")
    return data


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two names reach one file: the same name, a symlink or a hard link."""
    try:
        return os.path.samefile(Path(a).expanduser(), Path(b).expanduser())
    except (OSError, ValueError):
        return False


def refuse_inputs(path: str | Path, inputs=()) -> None:
    """An output is never one of the command's inputs (through a link or not): writing
    it would destroy what the user gave, ``--force`` or not."""
    from edgechat.errors import InputError

    for given in inputs:
        if given is not None and str(given) != "-" and same_file(path, given):
            how = "" if os.path.abspath(path) == os.path.abspath(given) else ", through a link,"
            raise InputError(
                f"{shown(path)} is {shown(given)}{how} which this command reads: writing it "
                "would destroy it; give another output"
            )


def output_path(
    text: str | Path,
    force: bool = False,
    replace_hint: str = "pass --force to replace it",
    inputs=(),
) -> Path:
    """Where to write a file the user named: its folder must exist and take a file (a
    missing folder is a typo, not a request for new folders), never one of the command's
    ``inputs``, and a file already there is replaced only with ``force``. Checked before
    the work, so none is wasted."""
    from edgechat.errors import InputError

    path = Path(text).expanduser()
    refuse_inputs(path, inputs)
    if not path.name or path.name in (".", ".."):
        raise InputError(f"{shown(path)} names a folder; give a file name")
    folder = path.parent
    try:
        folder_st = os.stat(folder)
    except (OSError, ValueError) as exc:
        why = os_problem(exc)
        if isinstance(exc, FileNotFoundError):
            why = f"the folder {shown(folder)} does not exist; create it or choose another"
        raise InputError(f"cannot write {shown(path)}: {why}") from None
    if not stat.S_ISDIR(folder_st.st_mode):
        raise InputError(f"cannot write {shown(path)}: {shown(folder)} is not a folder")
    try:
        st = os.lstat(path)  # a file, a link (even a broken one or a loop), a folder
    except FileNotFoundError:
        st = None
    except (OSError, ValueError) as exc:  # a name too long, a NUL ...
        raise InputError(f"cannot write {shown(path)}: {os_problem(exc)}") from None
    if st is not None:
        if os.path.isdir(path):
            raise InputError(f"{shown(path)} is a folder; give a file name")
        if not force:
            raise InputError(f"{shown(path)} already exists; {replace_hint}")
    try:  # can a file be made there? (permissions, a read-only disk: root ignores modes)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise InputError(f"cannot write in {shown(folder)}: {os_problem(exc)}") from None
    return path


def partial_beside(path: Path) -> Path:
    """The temporary name a long write to ``path`` goes to, renamed when whole: hidden,
    beside it (the same file system), and naming this process."""
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


def clean_partials(path: Path) -> list[Path]:
    """Remove the partial files (``partial_beside``) of ``path`` that runs killed before
    they could (the process they name is gone); returns what was removed."""
    removed = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return removed
    start = f".{path.name}."
    for name in names:
        pid = name[len(start) : -len(".partial")]
        if not (name.startswith(start) and name.endswith(".partial") and pid.isdigit()):
            continue
        if int(pid) == os.getpid() or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            (path.parent / name).unlink()
            removed.append(path.parent / name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's: leave it
    return True


def sha256_of(path: Path, chunk: int = 8 * 1024**2) -> str:
    """A file's SHA-256, read a block at a time (models are gigabytes)."""
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
