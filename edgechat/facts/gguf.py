"""Facts about a model from its GGUF header alone: no weights are read or loaded.

Why not ``gguf.GGUFReader``? It memory-maps the whole file, so it cannot read the
header of a remote file through a few HTTP range requests, and it stumbles on a
truncated download instead of saying so. This reader parses the header from any
byte stream (a local file, or ``facts/httprange.py``'s ``HttpRangeFile``); the
``gguf`` package supplies the type tables (block sizes, quantisation names).
"""

from __future__ import annotations

import io
import os
import struct
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
    shape: tuple[int, ...] = ()  # ggml order: ne0 (a row's length) first

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
    finetune: str | None = None  # general.finetune ("Instruct", "it"), where the file says

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

    def __init__(self, stream, source: str, size: int | None = None) -> None:
        self._s = stream
        self._src = source
        self.pos = 0
        # Counts in the file are checked against what is left of it before anything is
        # allocated from them (a remote file of unknown size: against 4 GiB of header).
        self.size = size if size is not None else 1 << 32
        self.last_array = -1  # the element type of the last array read

    def left(self) -> int:
        return max(self.size - self.pos, 0)

    def claim(self, n: int, each: int, what: str) -> None:
        """Refuse ``n`` items of at least ``each`` bytes when the file cannot hold them."""
        if n * each > self.left():
            raise GGUFError(
                f"{self._src} has a corrupt GGUF header: it claims {n:,} {what}, more than "
                "the file holds (it is truncated or damaged: download it again)"
            )

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
        self.claim(n, 1, "bytes of text")
        return self.read(n).decode("utf-8", "replace")

    def value(self, vtype: int):
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.unpack("<I"), self.unpack("<Q")
            self.last_array = etype
            if etype == _ARRAY:
                raise GGUFError(f"{self._src} has a corrupt GGUF header (an array of arrays)")
            each = struct.calcsize(_SCALARS[etype]) if etype in _SCALARS else 8
            self.claim(count, each, "array items")
            if etype in _SCALARS and count > _KEEP_ARRAY:
                self._skip(each * count)  # keep the length only
                return _Length(count)
            if count <= _KEEP_ARRAY:
                return [self.value(etype) for _ in range(count)]
            for _ in range(count):
                self.value(etype)
            return _Length(count)
        raise GGUFError(f"{self._src} has a corrupt GGUF header (value type {vtype})")

    def _skip(self, n: int) -> None:
        while n:
            step = min(n, 1 << 24)
            self.read(step)
            n -= step


class _Length(int):
    """A long array, kept as its length."""


def _read_kv(r: _Reader, source: str) -> tuple[int, int, dict, dict]:
    """The header up to the tensors: version, tensor count, metadata and its types."""
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
    r.claim(n_kv, 13, "metadata entries")  # key length, a 1-byte key, a type, a byte
    kv: dict = {}
    kv_types: dict[str, int] = {}
    for _ in range(n_kv):
        key = r.string()
        if key in kv:
            raise GGUFError(f"{source} has a corrupt GGUF header: the key {key!r} appears twice")
        vtype = r.unpack("<I")
        kv[key] = r.value(vtype)
        kv_types[key] = ("array", r.last_array) if vtype == _ARRAY else vtype
    return version, n_tensors, kv, kv_types


def metadata(path: str | Path) -> dict:
    """Every metadata key of a local GGUF with its value; long arrays (the vocabulary)
    as None, as Ollama's /api/show gives them."""
    path = Path(path)
    with path.open("rb") as fh:
        r = _Reader(io.BufferedReader(fh, 1 << 20), str(path), path.stat().st_size)
        kv = _read_kv(r, str(path))[2]
    return {k: None if isinstance(v, _Length) else v for k, v in kv.items()}


def read_header(
    stream, source: str, file_size: int | None = None, strict: bool = True
) -> ModelFacts:
    """Facts from a GGUF header, refusing what llama.cpp would refuse or crash on.

    ``strict`` also checks the model's own numbers (a known architecture, layers and
    heads above zero, finite floats): what every command that loads a file needs.
    Without it (facts about a synthetic or foreign file) only the file's structure is.
    """
    from gguf.constants import LlamaFileType

    from edgechat.facts import ggufcheck

    r = _Reader(stream, source, file_size)
    version, n_tensors, kv, kv_types = _read_kv(r, source)
    r.claim(n_tensors, 25, "tensors")  # name length, dims count, type, offset
    align = ggufcheck.alignment(kv, kv_types, source)
    tensors, layout = ggufcheck.read_tensors(r, n_tensors, align, source)
    expected_size = -(-r.pos // align) * align + layout
    if strict:
        ggufcheck.model_numbers(kv, kv_types, tensors, source)
    arch = _text(kv.get("general.architecture", "unknown"))

    def get(key: str, default=None):
        return kv.get(f"{arch}.{key}", default)

    n_layers = _int(get("block_count", 0), "block_count", source)
    if not 0 <= n_layers <= ggufcheck.MAX_LAYERS:
        raise GGUFError(
            f"{source}: block_count is {n_layers}; llama.cpp loads 1 to {ggufcheck.MAX_LAYERS}"
        )
    n_embd = _int(get("embedding_length", 0), "embedding_length", source)
    n_head = _first(get("attention.head_count", 0), "attention.head_count", source)
    head_kv = get("attention.head_count_kv", n_head)
    if isinstance(head_kv, list):
        n_head_kv = tuple(_int(h, "attention.head_count_kv", source) for h in head_kv)
    else:
        n_head_kv = (_int(head_kv, "attention.head_count_kv", source),) * n_layers
    head_dim_k = _int(
        get("attention.key_length", n_embd // n_head if n_head else 0), "key_length", source
    )
    head_dim_v = _int(get("attention.value_length", head_dim_k), "value_length", source)
    window = get("attention.sliding_window")
    window = _int(window, "attention.sliding_window", source) if window is not None else None
    pattern = get("attention.sliding_window_pattern")
    if pattern is not None and not isinstance(pattern, list):
        pattern = _int(pattern, "attention.sliding_window_pattern", source)
    swa_layers = _swa_layers(arch, n_layers, window, pattern)
    tokens = kv.get("tokenizer.ggml.tokens")
    if tokens is not None:
        n_vocab = len(tokens) if isinstance(tokens, list) else _int(tokens, "tokens", source)
    else:
        n_vocab = _int(get("vocab_size", 0), "vocab_size", source)

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
    n_ff = _first(n_ff, "feed_forward_length", source) if n_ff is not None else None
    name = kv.get("general.name")
    return ModelFacts(
        source=source,
        version=version,
        architecture=arch,
        name=name if isinstance(name, str) else None,
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
        n_ff=n_ff,
        context_length=_int(get("context_length", 0), "context_length", source),
        n_vocab=n_vocab,
        sliding_window=window or None,
        swa_layers=swa_layers,
        chat_template=bool(kv.get("tokenizer.chat_template")),  # empty: none, as llama.cpp
        quant_mix=dict(sorted(mix.items(), key=lambda kv_: -kv_[1]["bytes"])),
        tensors=tuple(tensors),
        finetune=tuned if isinstance(tuned := kv.get("general.finetune"), str) else None,
    )


def _int(value, key: str, source: str) -> int:
    """A whole number from the header, or a one-line refusal (a string, a list, a float)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise GGUFError(
            f"{source}: {key} should be a whole number but the file holds {_brief(value)}; "
            "the file is damaged or not made for llama.cpp"
        )
    return int(value)


def _first(value, key: str, source: str) -> int:
    """A per-layer value's first entry (the same everywhere in most models)."""
    if isinstance(value, list):
        if not value:
            raise GGUFError(f"{source}: {key} is an empty list; the file is damaged")
        return _int(value[0], key, source)
    return _int(value, key, source)


def _text(value) -> str:
    return value if isinstance(value, str) else "unknown"


def _brief(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


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


def inspect_file(path: str | Path, strict: bool = True) -> ModelFacts:
    """Facts from a local GGUF; only a regular file whose size matches its header."""
    from edgechat.facts.ggufcheck import TRAILING
    from edgechat.paths import open_user_file, os_problem, user_file

    path = user_file(path, "GGUF file", GGUFError)  # every file-system error: one line
    try:
        with open_user_file(path, GGUFError) as fh:
            size = os.fstat(fh.fileno()).st_size
            facts = read_header(io.BufferedReader(fh, 1 << 20), str(path), size, strict)
    except OSError as exc:
        raise GGUFError(f"cannot read {path}: {os_problem(exc)}") from None
    except RecursionError:
        raise GGUFError(f"{path} has a corrupt GGUF header") from None
    if size < facts.expected_size:
        raise GGUFError(
            f"{path} is truncated: its header says it is {facts.expected_size:,} bytes "
            f"but the file holds {size:,}; download it again"
        )
    if size > facts.expected_size + TRAILING:
        raise GGUFError(
            f"{path} holds {size:,} bytes but its header accounts for {facts.expected_size:,}: "
            "it is damaged or was extended; download it again"
        )
    return facts


def inspect_url(url: str, headers: dict | None = None) -> ModelFacts:
    """Facts from a remote GGUF, reading only its header."""
    from edgechat.facts.httprange import HttpRangeFile

    raw = HttpRangeFile(url, headers)
    facts = read_header(io.BufferedReader(raw, 1 << 20), url, None)
    return replace(facts, file_size=raw.size)


def inspect(target: str) -> ModelFacts:
    if target.startswith(("http://", "https://")):
        return inspect_url(target)
    return inspect_file(target)
