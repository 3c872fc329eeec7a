"""`shrink`'s work folder and its manifest (``shrink.json``): the finished candidates of
a run, so that the same command carries on after Ctrl-C instead of starting again.

The manifest is untrusted input: edgechat wrote it, but anyone may have changed it (or
the files it names) since. So every entry is checked before it is believed: its shape
(each field of the type written, the figures' names and finite values), its file (a
plain name, a regular file right inside the folder, not a link out of it, with the
size and the SHA-256 recorded when it was made). What fails is dropped with one line
and made again; nothing outside the folder is ever read, moved or deleted through it.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

from edgechat.errors import EdgechatError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}$")  # a file right in the folder
_SHA = re.compile(r"^[0-9a-f]{64}$")
_FIGURES = {"kl_mean", "kl_p99", "ppl_ratio", "top1"}
_MAX = 1 << 20  # the manifest of every candidate is a few kilobytes


class Manifest:
    """The work folder's record of finished candidates (and the importance matrix)."""

    def __init__(self, work: Path, key: dict, say: Callable[[str], None] = lambda _: None):
        self.work, self.key, self.say = work, key, say
        self.file = work / "shrink.json"
        self.done: dict[str, dict] = {}
        self.imatrix: str | None = None
        self.imatrix_sha256: str | None = None
        self._hashes: dict[str, str] = {}  # file name -> its SHA-256, read once a run
        data = self._read()
        if data is None or data.get("key") != key:
            return  # another source, text or setting: its candidates are not these
        matrix, sha = data.get("imatrix"), data.get("imatrix_sha256")
        if matrix is not None and (not _plain(matrix) or not _is_sha(sha)):
            say(f"{self.file.name}: its importance matrix entry is damaged; it is made again")
        elif matrix is not None:
            self.imatrix, self.imatrix_sha256 = matrix, sha
        done = data.get("done")
        if done is not None and not isinstance(done, dict):
            say(f"{self.file.name}: its list of candidates is damaged; they are made again")
            done = {}
        for cid, entry in (done or {}).items():
            why = _entry_problem(entry)
            if why:
                say(f"{self.file.name}: the entry of {_short(cid)} is damaged ({why}); made again")
            else:
                self.done[cid] = entry

    def _read(self) -> dict | None:
        from edgechat.paths import read_user_file

        if not os.path.lexists(self.file):
            return None
        try:
            data = json.loads(read_user_file(self.file, _MAX, EdgechatError))
        except EdgechatError as e:  # a pipe, a device, too big: said as it is
            self.say(f"{_short(str(e), 300)}: starting afresh")
            return None
        except (ValueError, RecursionError) as e:
            why = "it nests too deeply" if isinstance(e, RecursionError) else _short(str(e), 80)
            self.say(f"{self.file} is damaged ({why}): starting afresh")
            return None
        if not isinstance(data, dict):
            self.say(f"{self.file} is damaged (not a table): starting afresh")
            return None
        return data

    def save(self) -> None:
        from edgechat.paths import write_private

        body = {
            "key": self.key,
            "imatrix": self.imatrix,
            "imatrix_sha256": self.imatrix_sha256,
            "done": self.done,
        }
        write_private(self.file, json.dumps(body, indent=1) + "\n")

    # -- files the manifest names --------------------------------------------------------
    def hash_of(self, name: str) -> str | None:
        """The SHA-256 of ``name`` in the folder, when it is a regular file right there
        (not a link, not anything else); read once a run."""
        from edgechat.paths import sha256_of

        if name not in self._hashes:
            path = self.work / name
            try:
                st = os.lstat(path)
            except OSError:
                return None
            if not stat.S_ISREG(st.st_mode) or path.resolve().parent != self.work.resolve():
                return None
            try:
                self._hashes[name] = sha256_of(path)
            except OSError:
                return None
        return self._hashes[name]

    def record(self, cid: str, entry: dict) -> None:
        """A candidate just made: its entry with the file's size and hash."""
        from edgechat.paths import sha256_of

        path = self.work / entry["file"]
        self._hashes[entry["file"]] = sha = sha256_of(path)
        self.done[cid] = {**entry, "size": path.stat().st_size, "sha256": sha}
        self.save()

    def record_matrix(self, name: str) -> None:
        from edgechat.paths import sha256_of

        self._hashes[name] = self.imatrix_sha256 = sha256_of(self.work / name)
        self.imatrix = name
        self.save()

    def made(self, cid: str) -> dict | None:
        """The candidate's entry while its whole file is still there, as it was made;
        a file changed since is said once and made again."""
        entry = self.done.get(cid)
        if not entry:
            return None
        path = self.work / entry["file"]
        try:
            size = os.lstat(path).st_size
        except OSError:
            return None  # deleted: made again, quietly
        if size == entry["size"] and self.hash_of(entry["file"]) == entry["sha256"]:
            return entry
        self.say(f"{entry['file']} in {self.work} changed since it was made: made again")
        del self.done[cid]
        return None

    def finished(self, cid: str) -> dict | None:
        """The entry of a candidate made, scored and timed."""
        entry = self.made(cid)
        return entry if entry and entry.get("figures") else None

    def matrix_file(self) -> Path | None:
        """The importance matrix this folder keeps, when it is still as it was made."""
        if not self.imatrix:
            return None
        if self.hash_of(self.imatrix) == self.imatrix_sha256:
            return self.work / self.imatrix
        if os.path.lexists(self.work / self.imatrix):
            self.say(f"{self.imatrix} in {self.work} changed since it was made: made again")
        self.imatrix = self.imatrix_sha256 = None
        return None

    def forget_matrix(self) -> None:
        self.imatrix = self.imatrix_sha256 = None

    def kept(self) -> list[str]:
        names = [e["file"] for c, e in list(self.done.items()) if self.made(c)]
        if self.matrix_file():
            names.insert(0, self.imatrix)
        return names


def _plain(name) -> bool:
    return isinstance(name, str) and bool(_NAME.match(name)) and name not in ("shrink.json",)


def _is_sha(value) -> bool:
    return isinstance(value, str) and bool(_SHA.match(value))


def _number(value, low: float = 0.0) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= low
    )


def _entry_problem(entry) -> str | None:
    """What is wrong with a candidate's entry, or None: the shape ``record`` writes."""
    from edgechat.lab.quantize import TYPES

    if not isinstance(entry, dict):
        return "not a table"
    if not _plain(entry.get("file")) or not str(entry["file"]).endswith(".gguf"):
        return "its file is not a .gguf right in the folder"
    if not isinstance(entry.get("size"), int) or isinstance(entry["size"], bool):
        return "no size"
    if not _is_sha(entry.get("sha256")):
        return "no SHA-256"
    if entry.get("type") not in TYPES or not isinstance(entry.get("imatrix"), bool):
        return "no type"
    figures = entry.get("figures")
    if figures is not None:
        if not isinstance(figures, dict) or set(figures) != _FIGURES:
            return "figures of the wrong names"
        if not all(_number(v) for k, v in figures.items() if not (k == "kl_p99" and v is None)):
            return "figures that are not numbers"
    tps = entry.get("tps")
    if tps is not None and not _number(tps):
        return "a speed that is not a number"
    return None


def _short(text, width: int = 60) -> str:
    from edgechat.text import clean

    value = clean(text if isinstance(text, str) else repr(text))
    return value if len(value) <= width else value[: width - 1] + "…"
