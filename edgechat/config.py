"""User settings, stored as flat TOML in the config dir.

Only keys the user set are written, so a later release can change a default.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from edgechat import limits
from edgechat.errors import ConfigError, EdgechatError
from edgechat.paths import Paths, paths, write_private

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class Settings:
    default_model: str = ""
    ctx: int = 4096
    threads: int = 0  # 0: chosen at load from the free cores (planning/threads.py)
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
    # auto | amx | repack | plain: llama.cpp's CPU kernels; auto uses those a check in a
    # child process found to compute right here, the faster set (facts/kernels.py)
    cpu_kernels: str = "auto"
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
            seed=limits.RANDOM_SEED if self.seed < 0 else self.seed,
            max_tokens=self.max_tokens,
        )


_TYPES = {f.name: f.type for f in fields(Settings)}
_MAX_TEXT = 100_000  # a system prompt longer than this is a mistake


def _check_key(key: str) -> str:
    if key not in _TYPES:
        known = ", ".join(sorted(_TYPES))
        raise ConfigError(f"unknown setting '{key}'; known settings: {known}")
    return _TYPES[key]


def _coerce(key: str, value, where: str = ""):
    """``value`` checked against the setting's type and range; ``where`` names the file."""
    kind = _check_key(key)
    try:
        if kind in ("int", "float"):
            if isinstance(value, str):
                return limits.parse(key, value.strip())
            return limits.check(key, value, here=not where)
        if not isinstance(value, str) or len(value) > _MAX_TEXT:
            raise ValueError(f"needs text (at most {_MAX_TEXT:,} characters), not {_brief(value)}")
        if "\x00" in value:
            raise ValueError("must not contain a NUL character")
        if key in limits.CHOICES:
            return limits.check_choice(key, value)
        return value
    except ValueError as e:
        if where:
            raise ConfigError(
                f"{where}: setting '{key}': {e}; fix it with "
                f"`edgechat config set {key} VALUE` or `edgechat config unset {key}`"
            ) from None
        raise ConfigError(f"setting '{key}': {e}") from None


def _brief(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{type(value).__name__} of {len(value)} items"


def _read_raw(p: Paths) -> dict:
    try:
        data = p.config_file.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        from edgechat.paths import home_fix, os_problem, shown

        why = os_problem(exc)
        raise ConfigError(f"cannot read {shown(p.config_file)}: {why}; {home_fix()}") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        why = f"it is not UTF-8 text (byte {exc.start})"
    except tomllib.TOMLDecodeError as exc:
        why = f"it is not valid TOML ({exc})"
    except RecursionError:
        why = "it nests too deeply to be a settings file"
    raise ConfigError(
        f"{p.config_file}: {why}; fix it, `edgechat config unset KEY` the bad line, or "
        "delete the file to start afresh"
    )


def load(p: Paths | None = None) -> Settings:
    p = p or paths()
    raw = _read_raw(p)
    values = {
        key: _coerce(key, value, str(p.config_file)) for key, value in raw.items() if key in _TYPES
    }
    return Settings(**values)


def _dump(raw: dict) -> str:
    lines = ["# edgechat settings; `edgechat config` lists them all"]
    for key in sorted(raw):
        value = raw[key]
        # JSON string and number literals are valid TOML basic strings and numbers
        # (every number here is finite: _coerce refuses nan and inf).
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def _check_model(value: str) -> str:
    """A default model must be something `chat` can run: an installed id or a GGUF file,
    of a model that chats (`chat` and the app refuse a base model: so does this)."""
    from edgechat.models import registry

    if not value:
        return value
    path = Path(value).expanduser()
    if os.path.isfile(path):  # never raises (a loop, a name too long: resolve says why)
        _refuse_base_model(value, path)
        return os.path.realpath(path)  # a path must not depend on the cwd
    try:
        found = registry.resolve(value)
    except EdgechatError as e:
        from edgechat.paths import shown

        why = f": {e}" if "/" in value or path.suffix.lower() == ".gguf" else ""  # a path
        ids = ", ".join(registry.installed()) or "none"
        raise ConfigError(
            f"default_model '{shown(value)}' is neither an installed model nor a GGUF file"
            f"{why} (installed: {ids}); pull or import it first"
        ) from None
    _refuse_base_model(value, found)
    return value


def _refuse_base_model(value: str, path: Path) -> None:
    """One line when ``path`` holds a base model: why, and what to pick instead."""
    from edgechat.facts.base_model import header_is_base_model
    from edgechat.facts.gguf import inspect_file
    from edgechat.paths import shown

    if not header_is_base_model(inspect_file(path, strict=False)):
        return
    chat = _installed_chat_models(exclude=path)
    instead = f"{', '.join(chat)} (installed), or " if chat else ""
    raise ConfigError(
        f"default_model '{shown(value)}' is a base model (its file has no chat template): "
        f"`chat` and the app cannot answer with it, so it cannot be the default; pick a chat "
        f"model: {instead}one `edgechat recommend` lists (`edgechat summarise --model "
        f"{shown(value)}` still uses it)"
    )


def _installed_chat_models(exclude: Path) -> list[str]:
    """Installed models the catalog knows as chat models (no header to read)."""
    from edgechat.errors import EdgechatError
    from edgechat.models import registry
    from edgechat.planning import catalog

    try:
        known = catalog.load()
    except EdgechatError:
        known = {}
    return [
        model_id
        for model_id, file in registry.installed().items()
        if file != exclude
        and "chat" in getattr(known.get(model_id.rpartition(":")[0]), "tasks", ())
    ]


def set_value(key: str, value: str, p: Paths | None = None) -> Settings:
    p = p or paths()
    raw = _read_raw(p)
    raw[key] = _coerce(key, value)
    if key == "default_model":
        raw[key] = _check_model(raw[key])
    write_private(p.config_file, _dump(raw))
    return load(p)


def unset_value(key: str, p: Paths | None = None) -> Settings | None:
    """Forget ``key``; works on a file that no longer parses (its lines for ``key`` go).

    Returns the settings, or None when the file is still broken for another reason.
    """
    p = p or paths()
    try:
        raw = _read_raw(p)
    except ConfigError:
        if not _unset_line(p, key):
            _check_key(key)  # neither in the file nor a setting: say which exist
    else:
        if key not in raw:
            _check_key(key)
        raw.pop(key, None)
        write_private(p.config_file, _dump(raw))
    try:
        return load(p)
    except ConfigError:
        return None


def _unset_line(p: Paths, key: str) -> bool:
    """Remove ``key = ...`` lines from a file TOML cannot read, leaving the rest as it is."""
    lines = p.config_file.read_bytes().split(b"\n")
    mark = re.compile(rb"\s*" + re.escape(key.encode()) + rb"\s*=")
    kept = [line for line in lines if not mark.match(line)]
    if len(kept) == len(lines):
        return False
    write_private(p.config_file, b"\n".join(kept).decode("utf-8", "replace"))
    return True
