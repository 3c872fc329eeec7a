"""Facts about a model from its GGUF header alone: no weights are read or loaded.

Why not ``gguf.GGUFReader``? It memory-maps the whole file, so it cannot read the
header of a remote file through a few HTTP range requests, and it stumbles on a
truncated download instead of saying so. This reader parses the header from any
byte stream (a local file, or ``HttpRangeFile``); the ``gguf`` package supplies the
type tables (block sizes, quantisation names).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from edgechat.errors import EdgechatError


class GGUFError(EdgechatError):
    """The file is not a GGUF model this version of edgechat can read."""


# Value types of GGUF metadata (gguf spec): id -> struct format, or None for special.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q"}
_SCALARS |= {11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# Arrays longer than this (vocabularies, merges) are kept as their length only.
_KEEP_ARRAY = 256

# Architectures whose sliding-window layers follow a fixed pattern inside llama.cpp
# when the GGUF does not say: every n-th layer attends to the full context.
_SWA_PATTERN = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "cohere2": 4}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type_name: str
    n_elements: int
    n_bytes: int

    @property
    def layer(self) -> int | None:
        """Block index for ``blk.N.*`` tensors; None for embeddings, output, norms."""
        parts = self.name.split(".")
        if len(parts) > 2 and parts[0] == "blk" and parts[1].isdigit():
            return int(parts[1])
        return None


@dataclass(frozen=True)
class ModelFacts:
    source: str
    version: int
    architecture: str
    name: str | None
    file_type: str | None
    n_params: int
    tensor_bytes: int
    file_size: int | None
    expected_size: int  # where the header says the last tensor ends
    n_layers: int
    n_embd: int
    n_head: int
    n_head_kv: tuple[int, ...]  # per layer
    head_dim_k: int
    head_dim_v: int
    n_ff: int | None
    context_length: int
    n_vocab: int
    sliding_window: int | None
    swa_layers: tuple[bool, ...]  # per layer: does it only see the window?
    chat_template: bool
    quant_mix: dict[str, dict[str, int]]  # type -> {tensors, params, bytes}
    tensors: tuple[TensorInfo, ...] = field(repr=False, default=())

    @property
    def bits_per_weight(self) -> float:
        return self.tensor_bytes * 8 / self.n_params if self.n_params else 0.0

    def as_dict(self, with_tensors: bool = False) -> dict:
        d = asdict(self)
        d["bits_per_weight"] = round(self.bits_per_weight, 3)
        if not with_tensors:
            del d["tensors"]
        return d


class _Reader:
    """Little-endian GGUF primitives over a byte stream, failing clearly at EOF."""

    def __init__(self, stream, source: str) -> None:
        self._s = stream
        self._src = source
        self.pos = 0

    def read(self, n: int) -> bytes:
        data = self._s.read(n)
        if len(data) != n:
            raise GGUFError(
                f"{self._src} ends inside its GGUF header (at byte {self.pos + len(data)}): "
                "the file is truncated; download it again"
            )
        self.pos += n
        return data

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        if n > 1 << 26:
            raise GGUFError(f"{self._src} has a corrupt GGUF header (a {n}-byte string)")
        return self.read(n).decode("utf-8", "replace")

    def value(self, vtype: int):
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.unpack("<I"), self.unpack("<Q")
            if etype in _SCALARS and count > _KEEP_ARRAY:
                self.read(struct.calcsize(_SCALARS[etype]) * count)  # skip, keep the length
                return _Length(count)
            items = [self.value(etype) for _ in range(count)]
            return _Length(count) if count > _KEEP_ARRAY else items
        raise GGUFError(f"{self._src} has a corrupt GGUF header (value type {vtype})")


class _Length(int):
    """A long array, kept as its length."""


def read_header(stream, source: str, file_size: int | None = None) -> ModelFacts:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

    r = _Reader(stream, source)
    if r.read(4) != b"GGUF":
        raise GGUFError(f"{source} is not a GGUF model file")
    version = r.unpack("<I")
    if version not in (2, 3):
        raise GGUFError(
            f"{source} is GGUF version {version}; edgechat reads versions 2 and 3 "
            "(re-convert it with a current llama.cpp)"
        )
    n_tensors, n_kv = r.unpack("<Q"), r.unpack("<Q")
    if n_tensors > 1_000_000 or n_kv > 1_000_000:
        raise GGUFError(f"{source} has a corrupt GGUF header")
    kv = {}
    for _ in range(n_kv):
        key = r.string()
        kv[key] = r.value(r.unpack("<I"))
    tensors = []
    data_end = 0
    for _ in range(n_tensors):
        name = r.string()
        dims = [r.unpack("<Q") for _ in range(r.unpack("<I"))]
        ttype = r.unpack("<I")
        offset = r.unpack("<Q")  # into the data section
        n = 1
        for d in dims:
            n *= d
        try:
            qtype = GGMLQuantizationType(ttype)
            block, size = GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise GGUFError(
                f"{source}: tensor {name} has type {ttype}, unknown to this gguf package; "
                "update edgechat"
            ) from None
        tensors.append(TensorInfo(name, qtype.name, n, n // block * size))
        data_end = max(data_end, offset + n // block * size)

    align = int(kv.get("general.alignment", 32)) or 32
    expected_size = -(-r.pos // align) * align + data_end
    arch = str(kv.get("general.architecture", "unknown"))

    def get(key: str, default=None):
        return kv.get(f"{arch}.{key}", default)

    n_layers = int(get("block_count", 0))
    n_embd = int(get("embedding_length", 0))
    n_head = _first(get("attention.head_count", 0))
    head_kv = get("attention.head_count_kv", n_head)
    n_head_kv = tuple(head_kv) if isinstance(head_kv, list) else (int(head_kv),) * n_layers
    head_dim_k = int(get("attention.key_length", n_embd // n_head if n_head else 0))
    head_dim_v = int(get("attention.value_length", head_dim_k))
    window = get("attention.sliding_window")
    swa_layers = _swa_layers(arch, n_layers, window, get("attention.sliding_window_pattern"))
    tokens = kv.get("tokenizer.ggml.tokens")
    n_vocab = int(tokens) if tokens is not None else int(get("vocab_size", 0))

    mix: dict[str, dict[str, int]] = {}
    for t in tensors:
        m = mix.setdefault(t.type_name, {"tensors": 0, "params": 0, "bytes": 0})
        m["tensors"] += 1
        m["params"] += t.n_elements
        m["bytes"] += t.n_bytes
    ftype = kv.get("general.file_type")
    try:
        file_type = LlamaFileType(ftype).name.removeprefix("MOSTLY_") if ftype is not None else None
    except ValueError:
        file_type = str(ftype)
    n_ff = get("feed_forward_length")
    return ModelFacts(
        source=source,
        version=version,
        architecture=arch,
        name=kv.get("general.name"),
        file_type=file_type,
        n_params=sum(t.n_elements for t in tensors),
        tensor_bytes=sum(t.n_bytes for t in tensors),
        file_size=file_size,
        expected_size=expected_size,
        n_layers=n_layers,
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim_k=head_dim_k,
        head_dim_v=head_dim_v,
        n_ff=_first(n_ff) if n_ff is not None else None,
        context_length=int(get("context_length", 0)),
        n_vocab=n_vocab,
        sliding_window=int(window) if window else None,
        swa_layers=swa_layers,
        chat_template="tokenizer.chat_template" in kv,
        quant_mix=dict(sorted(mix.items(), key=lambda kv_: -kv_[1]["bytes"])),
        tensors=tuple(tensors),
    )


def _first(value) -> int:
    return int(value[0]) if isinstance(value, list) else int(value)


def _swa_layers(arch: str, n_layers: int, window, pattern) -> tuple[bool, ...]:
    if window and isinstance(pattern, list):  # per-layer flags, as newer converters write
        return tuple(bool(p) for p in pattern[:n_layers])
    return swa_pattern(n_layers, window, pattern or _SWA_PATTERN.get(arch, 0))


def swa_pattern(n_layers: int, window, every) -> tuple[bool, ...]:
    """Which layers see only the sliding window: all but every ``every``-th, as llama.cpp."""
    if not window:
        return (False,) * n_layers
    every = int(every or 0)
    if every <= 0:
        return (True,) * n_layers
    # llama.cpp: layer il uses the window unless (il % every) == every - 1.
    return tuple(il % every < every - 1 for il in range(n_layers))


def inspect_file(path: str | Path) -> ModelFacts:
    path = Path(path).expanduser()
    if not path.exists():
        raise GGUFError(f"no such file: {path}")
    if path.is_dir():
        raise GGUFError(f"{path} is a folder, not a GGUF file")
    size = path.stat().st_size
    try:
        with path.open("rb") as fh:
            facts = read_header(io.BufferedReader(fh, 1 << 20), str(path), size)
    except OSError as exc:
        raise GGUFError(f"cannot read {path}: {exc.strerror}") from None
    if size < facts.expected_size:
        raise GGUFError(
            f"{path} is truncated: its header says it is {facts.expected_size:,} bytes "
            f"but the file holds {size:,}; download it again"
        )
    return facts


class HttpRangeFile(io.RawIOBase):
    """Read a remote file sequentially through HTTP range requests, a chunk at a time."""

    def __init__(self, url: str, headers: dict | None = None, opener: Callable | None = None):
        import urllib.request

        self.url = url
        self.headers = dict(headers or {})
        self.pos = 0
        self.size: int | None = None
        self._open = opener or urllib.request.urlopen
        self.requests = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        import urllib.error
        import urllib.request

        if self.size is not None and self.pos >= self.size:
            return 0
        want = len(buf)
        req = urllib.request.Request(
            self.url,
            headers={**self.headers, "Range": f"bytes={self.pos}-{self.pos + want - 1}"},
        )
        try:
            with self._open(req, timeout=30) as resp:
                if resp.status != 206 and self.pos > 0:
                    # A 200 resends the file from its start: reading on would parse garbage.
                    raise GGUFError(f"{self.url}: the server does not support range requests")
                data = resp.read(want)
                rng = resp.headers.get("Content-Range", "")
        except urllib.error.HTTPError as exc:
            if exc.code == 416:
                return 0
            raise GGUFError(f"{self.url}: the server answered {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise GGUFError(f"cannot reach {self.url}: {reason}") from None
        self.requests += 1
        if "/" in rng and rng.rsplit("/", 1)[1].isdigit():
            self.size = int(rng.rsplit("/", 1)[1])
        n = min(len(buf), len(data))
        buf[:n] = data[:n]
        self.pos += n
        return n


def inspect_url(url: str, headers: dict | None = None) -> ModelFacts:
    """Facts from a remote GGUF, reading only its header."""
    raw = HttpRangeFile(url, headers)
    facts = read_header(io.BufferedReader(raw, 1 << 20), url, None)
    return replace(facts, file_size=raw.size)


def inspect(target: str) -> ModelFacts:
    if target.startswith(("http://", "https://")):
        return inspect_url(target)
    return inspect_file(target)
