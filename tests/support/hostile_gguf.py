"""A generator of hostile GGUF files, every class llama.cpp or a header reader trips on.

``base()`` is a tiny llama model (one layer, a 259-token SentencePiece vocabulary of
byte tokens) that llama.cpp loads and runs; every hostile file is that model with
one thing wrong, written byte by byte by ``encode`` so that anything can be wrong:
lying counts, duplicate keys, a string where a number belongs, tensors out of order.
``CASES`` maps a name to (what it breaks, a function making the file). Each case is
refused by edgechat with one line before llama.cpp sees it.

    python tests/hostile_gguf.py OUTDIR    # writes every case, for trying by hand
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

# GGUF value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f"}
_FMT |= {BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}
F32_T, F16_T = 0, 1  # ggml tensor types
EMBD, FF, VOCAB = 32, 64, 259


@dataclass
class KV:
    key: str
    vtype: int
    value: object
    etype: int | None = None  # arrays: the element type
    count: int | None = None  # arrays: a count to claim instead of the real one


@dataclass
class Tensor:
    name: str
    dims: list[int]
    ttype: int
    data: bytes
    offset: int | None = None  # None: laid out in order, as a writer does
    n_dims: int | None = None  # a count of dims to claim


@dataclass
class Spec:
    kv: list[KV]
    tensors: list[Tensor]
    version: int = 3
    magic: bytes = b"GGUF"
    n_kv: int | None = None
    n_tensors: int | None = None
    align: int = 32
    tail: bytes = b""
    extra: dict = field(default_factory=dict)


def _string(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def _value(vtype: int, value, etype=None, count=None) -> bytes:
    if vtype in _FMT:
        return struct.pack(_FMT[vtype], value)
    if vtype == STR:
        return _string(value)
    if vtype == ARR:
        body = b"".join(_value(etype, v, U32 if etype == ARR else None) for v in value)
        n = len(value) if count is None else count
        return struct.pack("<IQ", etype, n) + body
    return bytes(value)  # an unknown type: its bytes as given


def encode(spec: Spec) -> bytes:
    out = [spec.magic, struct.pack("<I", spec.version)]
    out.append(struct.pack("<Q", len(spec.tensors) if spec.n_tensors is None else spec.n_tensors))
    out.append(struct.pack("<Q", len(spec.kv) if spec.n_kv is None else spec.n_kv))
    for kv in spec.kv:
        out += [_string(kv.key), struct.pack("<I", kv.vtype)]
        out.append(_value(kv.vtype, kv.value, kv.etype, kv.count))
    offset, blobs = 0, []
    for t in spec.tensors:
        n_dims = len(t.dims) if t.n_dims is None else t.n_dims
        out += [_string(t.name), struct.pack("<I", n_dims)]
        out += [struct.pack("<Q", d & (2**64 - 1)) for d in t.dims]
        out += [
            struct.pack("<I", t.ttype),
            struct.pack("<Q", offset if t.offset is None else t.offset),
        ]
        padded = t.data + b"\0" * (-len(t.data) % spec.align)
        blobs.append(padded)
        offset += len(padded)
    header = b"".join(out)
    header += b"\0" * (-len(header) % spec.align)
    return header + b"".join(blobs) + spec.tail


def _f32(n: int, seed: int) -> bytes:
    import numpy as np

    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n).astype(np.float32) * 0.02).tobytes()


_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def base() -> Spec:
    """A tiny llama model llama.cpp loads and runs (its replies are noise)."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    kv = [
        KV("general.architecture", STR, "llama"),
        KV("general.name", STR, "Hostile Tiny"),
        KV("general.alignment", U32, 32),
        KV("llama.block_count", U32, 1),
        KV("llama.context_length", U32, 4096),
        KV("llama.embedding_length", U32, EMBD),
        KV("llama.feed_forward_length", U32, FF),
        KV("llama.attention.head_count", U32, 2),
        KV("llama.attention.head_count_kv", U32, 2),
        KV("llama.rope.freq_base", F32, 10000.0),
        KV("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
        KV("tokenizer.ggml.model", STR, "llama"),
        KV("tokenizer.ggml.tokens", ARR, tokens, STR),
        KV("tokenizer.ggml.scores", ARR, [0.0] * VOCAB, F32),
        KV("tokenizer.ggml.token_type", ARR, [2, 3, 3] + [6] * 256, I32),
        KV("tokenizer.ggml.bos_token_id", U32, 1),
        KV("tokenizer.ggml.eos_token_id", U32, 2),
        KV("tokenizer.ggml.unknown_token_id", U32, 0),
        KV("tokenizer.chat_template", STR, _CHATML),
    ]
    shapes = [
        ("token_embd.weight", [EMBD, VOCAB]),
        ("output_norm.weight", [EMBD]),
        ("output.weight", [EMBD, VOCAB]),
        ("blk.0.attn_norm.weight", [EMBD]),
        ("blk.0.attn_q.weight", [EMBD, EMBD]),
        ("blk.0.attn_k.weight", [EMBD, EMBD]),
        ("blk.0.attn_v.weight", [EMBD, EMBD]),
        ("blk.0.attn_output.weight", [EMBD, EMBD]),
        ("blk.0.ffn_norm.weight", [EMBD]),
        ("blk.0.ffn_gate.weight", [EMBD, FF]),
        ("blk.0.ffn_down.weight", [FF, EMBD]),
        ("blk.0.ffn_up.weight", [EMBD, FF]),
    ]
    tensors = []
    for i, (name, dims) in enumerate(shapes):
        n = 1
        for d in dims:
            n *= d
        data = struct.pack("<f", 1.0) * n if name.endswith("norm.weight") else _f32(n, i)
        tensors.append(Tensor(name, dims, F32_T, data))
    return Spec(kv, tensors)


# -- mutations -------------------------------------------------------------------------


def _set(spec: Spec, key: str, vtype: int, value, etype=None, count=None) -> Spec:
    kv = [k for k in spec.kv if k.key != key] + [KV(key, vtype, value, etype, count)]
    return replace(spec, kv=kv)


def _drop(spec: Spec, key: str) -> Spec:
    return replace(spec, kv=[k for k in spec.kv if k.key != key])


def _tensor(spec: Spec, which: str, **changes) -> Spec:
    return replace(
        spec, tensors=[replace(t, **changes) if t.name == which else t for t in spec.tensors]
    )


def _bytes(spec: Spec) -> bytes:
    return encode(spec)


def _kv(key, vtype, value, etype=None, count=None):
    return lambda: _bytes(_set(base(), key, vtype, value, etype, count))


_L = "llama."
Maker = Callable[[], bytes]
CASES: dict[str, tuple[str, Maker]] = {
    # the container
    "empty": ("structure", lambda: b""),
    "magic": ("structure", lambda: b"GGML" + _bytes(base())[4:]),
    "version-1": ("structure", lambda: _bytes(replace(base(), version=1))),
    "version-99": ("structure", lambda: _bytes(replace(base(), version=99))),
    "header-cut": ("truncated", lambda: _bytes(base())[:200]),
    "data-cut": ("truncated", lambda: _bytes(base())[:-100]),
    "n-kv-2^62": ("counts", lambda: _bytes(replace(base(), n_kv=2**62))),
    "n-kv-lies": ("counts", lambda: _bytes(replace(base(), n_kv=500_000))),
    "n-tensors-2^62": ("counts", lambda: _bytes(replace(base(), n_tensors=2**62))),
    "n-tensors-lies": ("counts", lambda: _bytes(replace(base(), n_tensors=900_000))),
    "string-2^62": ("counts", _kv("general.name", STR, b"x")),  # patched below
    "array-2^62": ("counts", _kv("tokenizer.ggml.scores", ARR, [0.0], F32, 2**62)),
    "array-of-strings-2^40": ("counts", _kv("tokenizer.ggml.merges", ARR, ["a b"], STR, 2**40)),
    "array-of-arrays": ("structure", _kv("general.tags", ARR, [[1]], ARR)),
    "value-type-99": ("structure", _kv("general.name", 99, b"")),
    "duplicate-key": (
        "duplicates",
        lambda: _bytes(replace(base(), kv=base().kv + [KV("llama.block_count", U32, 1)])),
    ),
    "duplicate-tensor": (
        "duplicates",
        lambda: _bytes(replace(base(), tensors=base().tensors + [base().tensors[1]])),
    ),
    # numbers llama.cpp asserts on, divides by, or allocates from
    "block-count-0": ("asserts", _kv(_L + "block_count", U32, 0)),
    "block-count-2^31": ("asserts", _kv(_L + "block_count", U32, 2**31)),
    "block-count-513": ("asserts", _kv(_L + "block_count", U32, 513)),
    "block-count-string": ("types", _kv(_L + "block_count", STR, "one")),
    "block-count-float": ("types", _kv(_L + "block_count", F32, 1.0)),
    "block-count-missing": ("asserts", lambda: _bytes(_drop(base(), _L + "block_count"))),
    "head-count-0": ("asserts", _kv(_L + "attention.head_count", U32, 0)),
    "head-count-empty-list": ("types", _kv(_L + "attention.head_count", ARR, [], U32)),
    "head-count-string": ("types", _kv(_L + "attention.head_count", STR, "2")),
    "head-count-kv-strings": ("types", _kv(_L + "attention.head_count_kv", ARR, ["a"], STR)),
    "embedding-0": ("asserts", _kv(_L + "embedding_length", U32, 0)),
    "context-0": ("asserts", _kv(_L + "context_length", U32, 0)),
    "context-string": ("types", _kv(_L + "context_length", STR, "512")),
    "ff-string": ("types", _kv(_L + "feed_forward_length", STR, "64")),
    "expert-count-9999": ("asserts", _kv(_L + "expert_count", U32, 9999)),
    "experts-used-more-than-experts": (
        "asserts",
        lambda: _bytes(
            _set(_set(base(), _L + "expert_count", U32, 2), _L + "expert_used_count", U32, 5)
        ),
    ),
    "experts-used-without-experts": ("asserts", _kv(_L + "expert_used_count", U32, 2)),
    "rope-freq-base-nan": ("nan", _kv(_L + "rope.freq_base", F32, float("nan"))),
    "rope-freq-base-inf": ("nan", _kv(_L + "rope.freq_base", F32, float("inf"))),
    "rope-freq-base-negative": ("nan", _kv(_L + "rope.freq_base", F32, -1.0)),
    "rms-eps-nan": ("nan", _kv(_L + "attention.layer_norm_rms_epsilon", F32, float("nan"))),
    "architecture-unknown": ("architecture", _kv("general.architecture", STR, "skynet")),
    "architecture-clip": ("architecture", _kv("general.architecture", STR, "clip")),
    "architecture-number": ("architecture", _kv("general.architecture", U32, 7)),
    "architecture-missing": ("architecture", lambda: _bytes(_drop(base(), "general.architecture"))),
    "alignment-0": ("alignment", _kv("general.alignment", U32, 0)),
    "alignment-3": ("alignment", _kv("general.alignment", U32, 3)),
    "alignment-u64": ("alignment", _kv("general.alignment", U64, 32)),
    "alignment-string": ("alignment", _kv("general.alignment", STR, "32")),
    "no-vocabulary": ("vocabulary", lambda: _bytes(_drop(base(), "tokenizer.ggml.tokens"))),
    "vocabulary-empty": ("vocabulary", _kv("tokenizer.ggml.tokens", ARR, [], STR)),
    "vocabulary-numbers": ("vocabulary", _kv("tokenizer.ggml.tokens", ARR, [1, 2, 3], U32)),
    "vocabulary-string": ("vocabulary", _kv("tokenizer.ggml.tokens", STR, "abc")),
    "vocabulary-count": ("vocabulary", _kv("tokenizer.ggml.tokens", U32, 259)),
    # tensors
    "tensor-5-dims": (
        "tensors",
        lambda: _bytes(_tensor(base(), "output_norm.weight", dims=[EMBD, 1, 1, 1, 1])),
    ),
    "tensor-dims-claim-9": (
        "tensors",
        lambda: _bytes(_tensor(base(), "output_norm.weight", n_dims=9)),
    ),
    "tensor-dim-0": ("tensors", lambda: _bytes(_tensor(base(), "output_norm.weight", dims=[0]))),
    "tensor-dim-negative": (
        "tensors",
        lambda: _bytes(_tensor(base(), "output_norm.weight", dims=[-32])),
    ),
    "tensor-dims-overflow": (
        "tensors",
        lambda: _bytes(_tensor(base(), "output_norm.weight", dims=[2**40, 2**40])),
    ),
    "tensor-type-99": ("tensors", lambda: _bytes(_tensor(base(), "output_norm.weight", ttype=99))),
    "tensor-type-removed-q4_2": (
        "tensors",
        lambda: _bytes(_tensor(base(), "output_norm.weight", ttype=4)),
    ),
    "tensor-rows-not-blocks": (
        "tensors",
        lambda: _bytes(_tensor(base(), "output_norm.weight", ttype=12)),  # Q4_K: rows of 256
    ),
    "tensor-offset-misaligned": (
        "offsets",
        lambda: _bytes(_tensor(base(), "output.weight", offset=EMBD * VOCAB * 4 + 160)),
    ),
    "tensor-offset-overlap": (
        "offsets",
        lambda: _bytes(_tensor(base(), "output.weight", offset=0)),
    ),
    "tensor-offset-beyond-file": (
        "offsets",
        lambda: _bytes(_tensor(base(), "blk.0.ffn_up.weight", offset=2**40)),
    ),
    "tensor-name-64": (
        "tensors",
        lambda: _bytes(_tensor(base(), "output_norm.weight", name="x" * 64)),
    ),
    "no-token-embd": (
        "tensors",
        lambda: _bytes(_tensor(base(), "token_embd.weight", name="token_embd.other")),
    ),
    # strings and text
    "general-name-escapes": (
        "text",
        _kv("general.name", STR, "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\x9b31m"),
    ),
    "general-name-invalid-utf8": ("text", _kv("general.name", STR, b"\xff\xfe\x80name")),
    "general-name-number": ("types", _kv("general.name", U32, 5)),
    # the file around the header
    "extended-1TiB-sparse": ("size", lambda: _bytes(base())),  # extended in write()
    "trailing-2MiB": ("size", lambda: _bytes(replace(base(), tail=b"\0" * (2 << 20)))),
}


def _string_2_62() -> bytes:
    data = _bytes(_set(base(), "general.name", STR, "x"))
    needle = _string("general.name") + struct.pack("<I", STR) + _string("x")
    patched = _string("general.name") + struct.pack("<I", STR) + struct.pack("<Q", 2**62) + b"x"
    return data.replace(needle, patched)


CASES["string-2^62"] = ("counts", _string_2_62)

_LOOP = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"
CASES |= {
    # headers llama.cpp reads but then refuses: only llama.cpp knows each architecture
    "missing-tensor": (
        "llama.cpp refuses",
        lambda: _bytes(
            replace(base(), tensors=[t for t in base().tensors if "attn_q" not in t.name])
        ),
    ),
    "tensor-wrong-shape": (
        "llama.cpp refuses",
        lambda: _bytes(_tensor(base(), "blk.0.attn_q.weight", dims=[16, 64])),
    ),
    "tensor-extra": (
        "llama.cpp refuses",
        lambda: _bytes(
            replace(
                base(), tensors=base().tensors + [Tensor("blk.7.x.weight", [32], 0, b"\0" * 128)]
            )
        ),
    ),
    # files that load but must not run quietly
    "weights-nan": (
        "runs wrong",
        lambda: _bytes(
            _tensor(base(), "output_norm.weight", data=struct.pack("<f", float("nan")) * EMBD)
        ),
    ),
    "template-loop": ("runs wrong", _kv("tokenizer.chat_template", STR, _LOOP)),
}

# Chat templates are code from the file. Read, compiled or rendered, each class of error:
_TEMPLATES: dict[str, str | bytes] = {
    "template-syntax": "{% for m in messages %}{{ m['content'] }",  # TemplateSyntaxError
    "template-not-utf8": b"{% for m in messages %}\xff\xfe{{ m['content'] }}{% endfor %}",
    "template-too-deep": "{% if true %}" * 3000 + "x" + "{% endif %}" * 3000,  # RecursionError
    "template-undefined": "{{ nothing.at.all }}" + _CHATML,  # UndefinedError
    "template-type-error": "{{ messages + 1 }}",  # TypeError
    "template-recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "template-unsafe": "{{ messages.__class__.__mro__ }}",  # the sandbox's SecurityError
    "template-zero-division": "{{ 1 // 0 }}" + _CHATML,
    "template-fails-on-system": (  # every chat has a system prompt by default
        "{% if messages[0]['role'] == 'system' %}{{ no_such_function() }}{% endif %}" + _CHATML
    ),
    # renders a new chat, but not one with history
    "template-fails-on-history": (
        "{% if messages | length > 2 %}{{ no_such_function() }}{% endif %}" + _CHATML
    ),
    "template-refuses-history": (
        "{% if messages | length > 2 %}{{ raise_exception('one question at a time') }}"
        "{% endif %}" + _CHATML
    ),
}
CASES |= {
    name: ("template", _kv("tokenizer.chat_template", STR, text))
    for name, text in _TEMPLATES.items()
}

# What edgechat must do with each case (the rest are refused from their header alone):
# "llama": the header is sound; import asks llama.cpp and refuses, chat says why in one line.
# "run": it loads; chat stops with one line instead of an empty reply or a hang.
# "ok": it loads and runs; what is shown of its text has no control characters.
# "template": it chats in the family format, with a warning that says why.
# "template-chat": it chats; a conversation its template cannot render is one line.
EXPECT = {name: "header" for name in CASES}
EXPECT |= {n: "llama" for n in ("missing-tensor", "tensor-wrong-shape", "tensor-extra")}
EXPECT |= {"weights-nan": "run", "template-loop": "run"}
EXPECT |= {"general-name-escapes": "ok", "general-name-invalid-utf8": "ok"}
EXPECT |= {name: "template" for name in _TEMPLATES}
EXPECT |= {n: "template-chat" for n in ("template-fails-on-history", "template-refuses-history")}


def write(name: str, folder: Path) -> Path:
    """Write hostile case ``name`` into ``folder``; returns the file."""
    path = folder / f"{name}.gguf"
    path.write_bytes(CASES[name][1]())
    if name == "extended-1TiB-sparse":
        os.truncate(path, 1 << 40)
    return path


def write_base(folder: Path) -> Path:
    path = folder / "tiny-valid.gguf"
    path.write_bytes(encode(base()))
    return path


def hostile_paths(folder: Path) -> dict[str, Path | str]:
    """Paths a user may type that the file system refuses, each its own way: a symlink
    loop (ELOOP), a name or path too long (ENAMETOOLONG), a folder (EISDIR), a file
    used as a folder (ENOTDIR), a broken link, a pipe, a NUL in the name."""
    folder.mkdir(parents=True, exist_ok=True)
    loop_a, loop_b = folder / "loop-a.gguf", folder / "loop-b.gguf"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    itself = folder / "itself.gguf"
    itself.symlink_to(itself)
    (folder / "a-folder.gguf").mkdir()
    (folder / "plain-file").write_text("not a folder")
    (folder / "broken.gguf").symlink_to(folder / "gone.gguf")
    os.mkfifo(folder / "pipe.gguf")
    return {
        "symlink-loop": loop_a,
        "symlink-to-itself": itself,
        "name-too-long": folder / ("x" * 300 + ".gguf"),
        "path-too-long": folder.joinpath(*["d" * 200] * 25, "m.gguf"),
        "a-folder": folder / "a-folder.gguf",
        "file-as-folder": folder / "plain-file" / "m.gguf",
        "broken-link": folder / "broken.gguf",
        "pipe": folder / "pipe.gguf",
        "nul-in-name": str(folder / "nul\0.gguf"),
    }


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "hostile-gguf")
    out.mkdir(parents=True, exist_ok=True)
    print(write_base(out))
    for case in CASES:
        print(write(case, out))
