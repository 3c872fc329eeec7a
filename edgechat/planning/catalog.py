"""The model catalog: models.toml shipped with edgechat, plus the user's own.

A user's ``models.toml`` in the config dir adds models or overrides the shipped
entries key by key (say, a mirror repo, or a quant the shipped list lacks).
"""

from __future__ import annotations

import difflib
import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgechat import limits
from edgechat.errors import ConfigError
from edgechat.paths import paths
from edgechat.planning.memory import Shape

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TASKS = limits.choices("task")


@dataclass(frozen=True)
class CatalogModel:
    id: str
    name: str
    repo: str
    license: str
    gated: bool
    params_b: float
    context: int
    tasks: tuple[str, ...]
    quants: tuple[str, ...]
    arch: dict

    @property
    def n_params(self) -> int:
        return int(self.params_b * 1e9)

    def shape(self, quant: str) -> Shape:
        """An offline stand-in for the GGUF header of this model in ``quant``."""
        return Shape.from_catalog({**self.arch, "context": self.context}, self.n_params, quant)

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "repo": self.repo,
            "license": self.license,
            "gated": self.gated,
            "params_b": self.params_b,
            "context": self.context,
            "tasks": list(self.tasks),
            "quants": list(self.quants),
            "arch": dict(self.arch),
        }


def validate(model_id: str, entry) -> list[str]:
    """What is wrong with one catalog entry, as readable lines (empty when it is fine):
    each names the key, what was found and what is allowed (limits.CATALOG, limits.ARCH)."""
    return _checked(model_id, entry)[1]


def unknown_keys(entry: dict) -> list[str]:
    """The keys of ``entry`` (and of its arch table) that the schema does not know."""
    unknown = [key for key in entry if key not in limits.CATALOG]
    arch = entry.get("arch")
    if isinstance(arch, dict):
        unknown += [f"arch.{key}" for key in arch if key not in limits.ARCH]
    return unknown


def _checked(model_id: str, entry) -> tuple[dict, list[str]]:
    """``entry`` with its values checked and made canonical, and what is wrong with it."""
    if not isinstance(entry, dict):
        return {}, [f'must be a table ([models."{_escaped(model_id)}"]), got {limits.brief(entry)}']
    problems = []
    try:
        limits.check_text("catalog_id", model_id)
    except ValueError as e:
        problems.append(f"id: {e}")
    clean = _check_table(entry, limits.CATALOG, "", problems)
    if isinstance(entry.get("arch"), dict):
        arch = clean["arch"] = _check_table(entry["arch"], limits.ARCH, "arch.", problems)
        heads, kv_heads = arch.get("heads"), arch.get("kv_heads")
        if heads and kv_heads and heads % kv_heads:
            problems.append(f"arch.kv_heads: must divide arch.heads ({heads}), got {kv_heads}")
    return clean, problems


def _check_table(table: dict, schema: dict, prefix: str, problems: list[str]) -> dict:
    """The keys of ``table`` that ``schema`` knows, checked; their problems go to
    ``problems`` (missing ones in one line)."""
    clean, missing = {}, []
    for key, (required, rule) in schema.items():
        if key not in table:
            missing += [f"'{prefix}{key}'"] * required
            continue
        value = table[key]
        if rule in ("quant", "[quant]"):  # quants are matched in any case, like the CLI's
            value = [_upper(q) for q in value] if isinstance(value, list) else _upper(value)
        try:
            if rule == "table":
                if not isinstance(value, dict):
                    raise ValueError(f"must be a table, got {limits.brief(value)}")
            else:
                clean[key] = limits.check_value(rule, value)
        except ValueError as e:
            problems.append(f"{prefix}{key}: {e}")
    if missing:
        problems.insert(0, f"missing {', '.join(missing)}")
    return clean


def _upper(value):
    return value.upper() if isinstance(value, str) else value


def _dotted(model_id: str, key: str, entry: dict) -> str:
    """The id a user meant by an unquoted ``[models.a.b.c]``: down to the entry's keys."""
    parts, table = [model_id, key], entry[key]
    while len(table) == 1 and not set(table) & set(limits.CATALOG):
        ((name, table),) = table.items()
        if not isinstance(table, dict):
            break
        parts.append(name)
    return _escaped(".".join(parts))


def _escaped(text: str) -> str:
    """``text`` safe to print (control characters escaped), at most 100 characters."""
    return repr(text)[1:-1][:100]


def _unknown_words(model_id: str, entry: dict) -> str:
    """The unknown keys of ``entry`` in words, with the likely meant key."""
    words = []
    for key in unknown_keys(entry):
        known = limits.ARCH if key.startswith("arch.") else limits.CATALOG
        close = difflib.get_close_matches(key.removeprefix("arch."), list(known), n=1)
        hint = f" (did you mean '{key[: key.find('.') + 1]}{close[0]}'?)" if close else ""
        if isinstance(entry.get(key), dict):  # [models.qwen2.5-1b]: TOML splits at the dot
            hint = f' (an id with a dot is quoted: [models."{_dotted(model_id, key, entry)}"])'
        words.append(f"'{_escaped(key)}'{hint}")
    return f"unknown key{'s' * (len(words) > 1)} {', '.join(words)} ignored" if words else ""


def _builtin_file() -> Path:
    package = Path(__file__).parent.parent
    # In the wheel it sits inside the package; in a source checkout at the repo root.
    inside = package / "models.toml"
    return inside if inside.is_file() else package.parent / "models.toml"


@functools.lru_cache(maxsize=1)
def _shipped(path: Path) -> dict:
    """The shipped file, parsed once a process (read() copies what it changes)."""
    return _read(path)


def _read(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text (byte {e.start}); fix or delete it") from None
    except RecursionError:
        raise ConfigError(f"{path} nests too deeply to be a catalog; fix or delete it") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError(f"{path}: [models] must be a table of models")
    return models


class LeftOut(ConfigError):
    """The model asked for is in a catalog file, but left out for a bad value."""


@dataclass(frozen=True)
class Checked:
    """The catalog as read: its models, the entries left out (id -> the line saying why)
    and the lines about keys that were ignored."""

    models: dict[str, CatalogModel]
    left_out: dict[str, str]
    ignored: tuple[str, ...]

    @property
    def lines(self) -> tuple[str, ...]:
        """What to tell the user, one line per entry."""
        return (*self.left_out.values(), *self.ignored)


def read(user_file: Path | None = None) -> Checked:
    """The shipped list with the user's file over it, every entry checked value by value.

    An entry with a bad value is left out whole (not put back to the shipped one: a
    user's repo mirror must not quietly turn into the original), so one bad entry does
    not take the catalog down. Only a file that cannot be read at all is a ConfigError.
    """
    shipped_file = _builtin_file()
    shipped = _shipped(shipped_file)
    user_file = user_file or paths().user_catalog
    user = _read(user_file) if user_file.is_file() else {}
    models, left_out, ignored = {}, {}, []
    for model_id in {**shipped, **user}:
        entry = shipped.get(model_id, {})
        if model_id in user:
            entry = _merge(entry, user[model_id])
        where = user_file if model_id in user else shipped_file
        clean, problems = _checked(model_id, entry)
        unknown = _unknown_words(model_id, entry) if isinstance(entry, dict) else ""
        shown = limits.brief(model_id)
        if problems:
            why = "; ".join([*problems, unknown] if unknown else problems)
            left_out[model_id] = f"{where}: model {shown} is left out until it is fixed: {why}"
            continue
        if unknown:
            ignored.append(f"{where}: model {shown}: {unknown}")
        models[model_id] = _model(model_id, clean)
    return Checked(models, left_out, tuple(ignored))


def _merge(base: dict, over):
    """The user's entry over the shipped one, key by key (the arch table too)."""
    if not isinstance(over, dict):
        return over
    if isinstance(base.get("arch"), dict) and isinstance(over.get("arch"), dict):
        over = {**over, "arch": {**base["arch"], **over["arch"]}}
    return {**base, **over}


def _model(model_id: str, e: dict) -> CatalogModel:
    return CatalogModel(
        id=model_id,
        name=e["name"],
        repo=e["repo"],
        license=e["license"],
        gated=e["gated"],
        params_b=e["params_b"],
        context=e["context"],
        tasks=tuple(e["tasks"]),
        quants=tuple(e["quants"]),
        arch=e["arch"],
    )


def load(
    user_file: Path | None = None, warn: Callable[[str], None] | None = None
) -> dict[str, CatalogModel]:
    """Every catalog model by id: the shipped list, then the user's file over it.

    ``warn`` hears, one line each, of the entries left out and the keys ignored.
    """
    checked = read(user_file)
    for line in checked.lines if warn else ():
        warn(line)
    return checked.models


def split_id(text: str) -> tuple[str, str | None]:
    """``qwen2.5-1.5b-instruct:Q4_K_M`` -> (id, quant); the quant may be absent."""
    model_id, _, quant = text.partition(":")
    quant = {"FP16": "F16", "FP32": "F32"}.get(quant.upper(), quant.upper())  # Qwen's spelling
    return model_id.lower(), (quant or None)


def find(
    text: str,
    catalog: dict[str, CatalogModel] | None = None,
    warn: Callable[[str], None] | None = None,
) -> tuple[CatalogModel, str]:
    """The catalog model and quant for ``ID[:QUANT]`` (Q4_K_M, or the nearest offered).

    Without ``catalog``, it is read here: a model left out for a bad value is a
    LeftOut error saying why, and ``warn`` hears of the other entries left out.
    """
    model_id, quant = split_id(text)
    if catalog is None:
        checked = read()
        if model_id in checked.left_out:
            raise LeftOut(checked.left_out[model_id])
        for line in checked.lines if warn else ():
            warn(line)
        catalog = checked.models
    model = catalog.get(model_id)
    if model is None:
        close = difflib.get_close_matches(model_id, list(catalog), n=4, cutoff=0.6)
        close = close or [m for m in catalog if model_id[:4] and m.startswith(model_id[:4])][:4]
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"'{model_id}' is not in the catalog.{hint} "
            "`edgechat recommend` lists what suits this machine."
        )
    if quant is None:
        quant = "Q4_K_M" if "Q4_K_M" in model.quants else model.quants[0]
    elif quant not in model.quants:
        raise ConfigError(
            f"{model.id} has no {quant} in the catalog; it offers {', '.join(model.quants)}"
        )
    return model, quant
