"""KV-cache snapshots: reopen a long conversation without reading it all again.

After a reply, the context's sequence (its KV cache and the tokens it holds) is written
with llama.cpp's ``llama_state_seq_save_file`` beside the conversation database; on
reopening, ``llama_state_seq_load_file`` puts it back and the engine evaluates only
what is new. A snapshot belongs to one model file and one plan (context size, KV cache
type, ...): with anything else it is ignored and the history is read again. A missing,
stale or damaged snapshot is never an error, only the slow path; a checksum guards the
bytes. The folder is kept under a size cap, the least recently used dropped first.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from edgechat.paths import ensure_private_dir

MIN_TOKENS = 256  # shorter conversations are read again in a blink; not worth a file


def _crc(path: Path) -> int:
    crc = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


def can_snapshot(engine) -> bool:
    """Whether ``engine``'s context can be written to a file: a llama.cpp context in this
    process (a server keeps its own; other engines, such as the tests' fake, have none)."""
    from edgechat.llama.engine import Engine

    return isinstance(engine, Engine)


def plan_key(engine) -> str:
    """What a snapshot is valid for: this model file, unchanged, run with this plan."""
    import llama_cpp

    plan = engine.plan
    st = os.stat(plan.model_path)
    ident = {
        "model": str(Path(plan.model_path).resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "n_ctx": engine.n_ctx,
        "type_k": plan.type_k,
        "type_v": plan.type_v,
        "n_gpu_layers": plan.n_gpu_layers,
        "flash_attn": plan.flash_attn,
        "swa_full": plan.swa_full,
        "n_ubatch": plan.n_ubatch,
        "llama_cpp": llama_cpp.__version__,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Restored:
    tokens: int  # tokens back in the cache (0: none; the history is read again)
    why: str  # "restored", "none", "stale", "damaged"


class Snapshots:
    """One file per conversation in ``folder``, the total kept under ``cap_bytes``."""

    def __init__(self, folder: Path, cap_bytes: int = 1 << 30) -> None:
        self.folder = folder
        self.cap_bytes = cap_bytes

    def _files(self, conversation_id: int) -> tuple[Path, Path]:
        return (
            self.folder / f"{conversation_id}.kv",
            self.folder / f"{conversation_id}.json",
        )

    def save(self, engine, conversation_id: int) -> int:
        """Write what the engine's context holds now as this conversation's snapshot;
        returns its size in bytes (0 when it was too short to keep, or disabled)."""
        tokens = engine._kv_tokens
        if self.cap_bytes <= 0 or len(tokens) < MIN_TOKENS:
            return 0
        lc = engine._lc
        ensure_private_dir(self.folder)
        data, meta = self._files(conversation_id)
        tmp = data.with_suffix(".kv.tmp")
        arr = (lc.llama_token * len(tokens))(*tokens)
        written = lc.llama_state_seq_save_file(engine._ctx, str(tmp).encode(), 0, arr, len(tokens))
        if not written or not tmp.exists():
            with contextlib.suppress(OSError):
                tmp.unlink()
            return 0
        os.chmod(tmp, 0o600)  # a KV cache holds the conversation, as the database does
        record = {
            "key": plan_key(engine),
            "tokens": len(tokens),
            "bytes": tmp.stat().st_size,
            "crc32": _crc(tmp),
            "saved": time.time(),
        }
        os.replace(tmp, data)
        meta_tmp = meta.with_suffix(".json.tmp")
        meta_tmp.write_text(json.dumps(record))
        os.chmod(meta_tmp, 0o600)
        os.replace(meta_tmp, meta)
        self._trim()
        return record["bytes"]

    def restore(self, engine, conversation_id: int) -> Restored:
        """Put this conversation's snapshot back in the engine's context, when it is
        there, made for this model and plan, and intact."""
        data, meta = self._files(conversation_id)
        try:
            record = json.loads(meta.read_text())
            size = data.stat().st_size
        except (OSError, ValueError):
            return Restored(0, "none")
        if record.get("key") != plan_key(engine):
            return Restored(0, "stale")
        n = int(record.get("tokens", 0))
        if size != record.get("bytes") or _crc(data) != record.get("crc32") or n > engine.n_ctx:
            self.drop(conversation_id)
            return Restored(0, "damaged")
        lc = engine._lc
        engine.clear_cache()
        out = (lc.llama_token * max(1, n))()
        count = ctypes.c_size_t(0)
        read = lc.llama_state_seq_load_file(
            engine._ctx, str(data).encode(), 0, out, max(1, n), ctypes.byref(count)
        )
        if not read or count.value != n:
            engine.clear_cache()  # whatever half-loaded is gone: read the history again
            self.drop(conversation_id)
            return Restored(0, "damaged")
        engine._kv_tokens[:] = list(out[:n])
        with contextlib.suppress(OSError):
            os.utime(meta)  # recently used: the cap drops it last
        return Restored(n, "restored")

    def drop(self, conversation_id: int) -> None:
        for path in self._files(conversation_id):
            with contextlib.suppress(OSError):
                path.unlink()

    def _trim(self) -> None:
        """Drop the least recently used snapshots until the folder fits the cap."""
        entries = []
        for meta in self.folder.glob("*.json"):
            data = meta.with_suffix(".kv")
            try:
                entries.append((meta.stat().st_mtime, meta, data.stat().st_size))
            except OSError:
                continue
        total = sum(size for _, _, size in entries)
        for _, meta, size in sorted(entries, key=lambda e: e[0]):  # oldest first
            if total <= self.cap_bytes:
                break
            if meta.stem.isdigit():
                self.drop(int(meta.stem))
                total -= size
