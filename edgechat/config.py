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
    max_tokens: int = 1024

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


_TYPES = {f.name: f.type for f in fields(Settings)}


def _check_key(key: str) -> str:
    if key not in _TYPES:
        known = ", ".join(sorted(_TYPES))
        raise ConfigError(f"unknown setting '{key}'; known settings: {known}")
    return _TYPES[key]


def _coerce(key: str, value):
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
