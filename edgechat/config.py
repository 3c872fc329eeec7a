"""User settings, stored as flat TOML in the config dir.

Only keys the user set are written, so a later release can change a default.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from edgechat.errors import ConfigError
from edgechat.paths import Paths, paths, write_private

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class Settings:
    default_model: str = ""
    ctx: int = 4096
    threads: int = 0  # 0: one per physical core
    gpu_layers: int = -1  # -1: as many as fit the GPU (all when they do)
    system_prompt: str = "You are a helpful assistant. Answer clearly and concisely."
    temperature: float = 0.7
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    # 1.1 over the last 64 tokens, as Ollama and LM Studio ship: at 1.0 (off) the starter
    # model loops one sentence to the token cap (benchmarks/repetition.py measures it).
    repeat_penalty: float = 1.1
    seed: int = -1  # -1: a new random seed each reply
    max_tokens: int = 1024
    kv_cache: str = "f16"  # f16 | q8_0 | q4_0: the KV cache type; q8_0 halves it
    snapshot_cap_mb: int = 2048  # KV snapshots for fast reopening; 0 turns them off

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def sampling_values(self) -> dict:
        """The sampler settings as ``Sampling`` takes them (seed -1: llama.cpp's random)."""
        return dict(
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            seed=0xFFFFFFFF if self.seed < 0 else self.seed,
            max_tokens=self.max_tokens,
        )


# The sampling settings' (type, lowest, highest), shared with the app's settings dialog.
RANGES = {
    "temperature": (float, 0.0, 2.0),
    "top_k": (int, 0, 1000),
    "top_p": (float, 0.0, 1.0),
    "min_p": (float, 0.0, 1.0),
    "repeat_penalty": (float, 1.0, 2.0),
    "seed": (int, -1, 2**32 - 2),
    "max_tokens": (int, 1, 131072),
    "snapshot_cap_mb": (int, 0, 1 << 20),
}
KV_CACHE_CHOICES = ("f16", "q8_0", "q4_0")

_TYPES = {f.name: f.type for f in fields(Settings)}


def _check_key(key: str) -> str:
    if key not in _TYPES:
        known = ", ".join(sorted(_TYPES))
        raise ConfigError(f"unknown setting '{key}'; known settings: {known}")
    return _TYPES[key]


def _coerce(key: str, value):
    value = _coerce_type(key, value)
    if key in RANGES and not RANGES[key][1] <= value <= RANGES[key][2]:
        _, low, high = RANGES[key]
        raise ConfigError(f"setting '{key}' must be from {low} to {high}, got {value}")
    if key == "kv_cache" and value not in KV_CACHE_CHOICES:
        raise ConfigError(f"setting 'kv_cache' must be one of {', '.join(KV_CACHE_CHOICES)}")
    return value


def _coerce_type(key: str, value):
    kind = _check_key(key)
    try:
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if kind == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        wanted = {"int": "a whole number", "float": "a number"}.get(kind, "text")
        raise ConfigError(f"setting '{key}' needs {wanted}, got {value!r}") from None


def _read_raw(p: Paths) -> dict:
    try:
        text = p.config_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {p.config_file}: {exc.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{p.config_file} is not valid TOML ({exc}); fix it or delete it to start afresh"
        ) from None


def load(p: Paths | None = None) -> Settings:
    raw = _read_raw(p or paths())
    values = {key: _coerce(key, value) for key, value in raw.items() if key in _TYPES}
    return Settings(**values)


def _dump(raw: dict) -> str:
    lines = ["# edgechat settings; `edgechat config` lists them all"]
    for key in sorted(raw):
        value = raw[key]
        # JSON string and number literals are valid TOML basic strings and numbers.
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def set_value(key: str, value: str, p: Paths | None = None) -> Settings:
    p = p or paths()
    raw = _read_raw(p)
    raw[key] = _coerce(key, value)
    if key == "default_model" and Path(value).expanduser().is_file():
        raw[key] = str(Path(value).expanduser().resolve())  # a path must not depend on the cwd
    write_private(p.config_file, _dump(raw))
    return load(p)


def unset_value(key: str, p: Paths | None = None) -> Settings:
    p = p or paths()
    _check_key(key)
    raw = _read_raw(p)
    raw.pop(key, None)
    write_private(p.config_file, _dump(raw))
    return load(p)
