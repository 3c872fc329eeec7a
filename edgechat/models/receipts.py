"""Quality receipts: what `quality` and `shrink` measured, kept so that `models info`,
`recommend` and the picker can say "KLD 0.031 on your text" later.

One JSON object a line in ``receipts.jsonl`` in the data dir (0600): appended whole under
a lock, so concurrent runs never interleave, and a line torn by a crash is skipped on
reading. A receipt names the model file by its SHA-256; a file whose hash no longer
matches (re-downloaded, edited, replaced) has no receipts. Hashes are cached by path,
size and modification time, so a file is read through once, not at every `recommend`.
Written by lab/, read here, below planning's recommender, which is handed the figures.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgechat.errors import EdgechatError
from edgechat.planning.budget import Budget, Figures

FORMAT = 1


@dataclass(frozen=True)
class FileRef:
    path: str
    sha256: str
    size: int
    quant: str | None


@dataclass(frozen=True)
class TextRef:
    name: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Receipt:
    kind: str  # quality | shrink
    model: FileRef
    ref: FileRef
    text: TextRef  # the text that was scored
    n_ctx: int
    tokens_scored: int
    ppl: float
    ppl_ref: float
    figures: Figures
    date: str = ""  # ISO 8601, UTC
    version: str = ""  # edgechat's
    made: dict = field(default_factory=dict)  # shrink: type, recipe, imatrix, task

    def as_dict(self) -> dict:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> Receipt:
        return cls(
            kind=str(d["kind"]),
            model=FileRef(**d["model"]),
            ref=FileRef(**d["ref"]),
            text=TextRef(**d["text"]),
            n_ctx=int(d["n_ctx"]),
            tokens_scored=int(d["tokens_scored"]),
            ppl=float(d["ppl"]),
            ppl_ref=float(d["ppl_ref"]),
            figures=Figures(**d["figures"]),
            date=str(d.get("date", "")),
            version=str(d.get("version", "")),
            made=dict(d.get("made") or {}),
        )

    def summary(self) -> str:
        """'KLD 0.031 on your text (notes.txt)': the figure people compare first."""
        return f"KLD {self.figures.kl_mean:.3g} on your text ({self.text.name})"

    def detail(self) -> str:
        f = self.figures
        p99 = f", p99 {f.kl_p99:.3g}" if f.kl_p99 is not None else ""
        return (
            f"KLD {f.kl_mean:.3g}{p99}, top-1 {100 * f.top1:.1f}%, PPL x{f.ppl_ratio:.3f} "
            f"against {Path(self.ref.path).name} ({self.ref.quant or '?'}) on your text "
            f"({self.text.name}, {self.tokens_scored} tokens, {self.date[:10]})"
        )

    def verdict(self, budget: Budget) -> str:
        fails = budget.failures(self.figures)
        return (
            f"meets the {budget.task} budget"
            if not fails
            else f"misses the {budget.task} budget ({'; '.join(fails)})"
        )


def receipts_file() -> Path:
    from edgechat.paths import paths

    return paths().data_dir / "receipts.jsonl"


def _hash_file() -> Path:
    from edgechat.paths import paths

    return paths().cache_dir / "sha256.json"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _cache() -> dict:
    try:
        data = json.loads(_hash_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _key(path: Path) -> tuple[str, list[int]]:
    st = path.stat()
    return str(path.resolve()), [st.st_size, st.st_mtime_ns]


def remember(path: Path, sha256: str) -> None:
    """Note ``path``'s hash (already known, as after a rename) so it is not read again."""
    from edgechat.paths import write_private

    name, stamp = _key(path)
    cache = _cache()
    cache[name] = [*stamp, sha256]
    with contextlib.suppress(OSError):  # a cache: without it the file is hashed again
        write_private(_hash_file(), json.dumps(cache) + "\n")


def hash_cached(path: str | Path) -> bool:
    """Is ``path``'s hash known for the file as it is now (no read needed)?"""
    name, stamp = _key(Path(path))
    hit = _cache().get(name)
    return isinstance(hit, list) and hit[:2] == stamp


def file_sha256(path: str | Path) -> str:
    """The file's SHA-256, from the cache while its path, size and mtime are unchanged."""
    path = Path(path)
    name, stamp = _key(path)
    hit = _cache().get(name)
    if isinstance(hit, list) and hit[:2] == stamp and isinstance(hit[-1], str):
        return hit[-1]
    from edgechat.paths import sha256_of

    digest = sha256_of(path)
    remember(path, digest)
    return digest


def text_ref(name: str, text: str) -> TextRef:
    data = text.encode("utf-8", "surrogatepass")
    return TextRef(name, hashlib.sha256(data).hexdigest(), len(data))


def file_ref(path: str | Path, quant: str | None) -> FileRef:
    path = Path(path)
    return FileRef(str(path.resolve()), file_sha256(path), path.stat().st_size, quant)


def add(receipt: Receipt) -> Receipt:
    """Append ``receipt`` (dated and signed with edgechat's version here) as one line."""
    from dataclasses import replace

    from filelock import FileLock, Timeout

    from edgechat import __version__
    from edgechat.paths import ensure_private_dir

    receipt = replace(receipt, date=receipt.date or _now(), version=__version__)
    line = (json.dumps(receipt.as_dict(), sort_keys=True) + "\n").encode()
    path = receipts_file()
    try:
        ensure_private_dir(path.parent)
        with FileLock(str(path.with_name(f".{path.name}.lock")), timeout=30):
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                end = os.lseek(fd, 0, os.SEEK_END)
                if end and os.pread(fd, 1, end - 1) != b"\n":
                    line = b"\n" + line  # a line torn by a crash stays apart from this one
                os.write(fd, line)  # one write of a whole line
                os.fsync(fd)
            finally:
                os.close(fd)
    except Timeout:
        raise EdgechatError(f"{path} stayed locked for 30 s; the figures were not kept") from None
    except OSError as e:
        raise EdgechatError(
            f"cannot keep the receipt in {path}: {e.strerror or e}; fix that folder"
        ) from None
    return receipt


def load_all() -> list[Receipt]:
    """Every readable receipt, oldest first; torn or foreign lines are skipped."""
    try:
        lines = receipts_file().read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise EdgechatError(f"cannot read {receipts_file()}: {e.strerror or e}") from None
    out = []
    for line in lines:
        try:
            data = json.loads(line)
            if isinstance(data, dict) and data.get("format") == FORMAT:
                out.append(Receipt.from_dict(data))
        except (ValueError, KeyError, TypeError):
            continue
    return out


def for_file(path: str | Path, every: list[Receipt] | None = None) -> list[Receipt]:
    """The receipts of the file at ``path`` as it is now, newest first. The file is
    hashed only when some receipt has its size."""
    path = Path(path)
    every = load_all() if every is None else every
    try:
        size = path.stat().st_size
    except OSError:
        return []
    sized = [r for r in every if r.model.size == size]
    if not sized:
        return []
    sha = file_sha256(path)
    return sorted((r for r in sized if r.model.sha256 == sha), key=lambda r: r.date, reverse=True)


def latest(path: str | Path) -> Receipt | None:
    found = for_file(path)
    return found[0] if found else None


def installed() -> dict[str, Receipt]:
    """The newest receipt of each installed model that has one, by installed id and, for
    models pulled from a catalog repo, by catalog ``ID:QUANT`` too (for `recommend`)."""
    from edgechat.models import registry
    from edgechat.planning import catalog

    every = load_all()
    if not every:
        return {}
    records = registry.records()
    by_repo = {m.repo: m.id for m in catalog.load().values()}
    out: dict[str, Receipt] = {}
    for model_id, path in registry.installed().items():
        found = for_file(path, every)
        if not found:
            continue
        out[model_id] = found[0]
        record = records.get(model_id) or {}
        catalog_id = by_repo.get(record.get("repo", ""))
        if catalog_id and record.get("quant"):
            out.setdefault(f"{catalog_id}:{record['quant']}", found[0])
    return out
