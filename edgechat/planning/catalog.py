"""The model catalog: models.toml shipped with edgechat, plus the user's own.

A user's ``models.toml`` in the config dir adds models or overrides the shipped
entries key by key (say, a mirror repo, or a quant the shipped list lacks).
"""

from __future__ import annotations

import difflib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from edgechat.errors import ConfigError
from edgechat.paths import paths
from edgechat.planning.memory import QUANT_BITS, Shape

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TASKS = ("chat", "code", "math", "summarise")
_ARCH_INTS = ("layers", "embd", "ff", "vocab", "heads", "kv_heads")
_REQUIRED = {
    "name": str,
    "repo": str,
    "license": str,
    "gated": bool,
    "params_b": (int, float),
    "context": int,
    "tasks": list,
    "quants": list,
    "arch": dict,
}


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


def validate(model_id: str, entry: dict) -> list[str]:
    """What is wrong with one catalog entry, as readable lines (empty when it is fine)."""
    problems = []
    for key, kind in _REQUIRED.items():
        if key not in entry:
            problems.append(f"{model_id}: missing '{key}'")
        elif not isinstance(entry[key], kind) or (kind is not bool and entry[key] is True):
            problems.append(f"{model_id}: '{key}' has the wrong type")
    if problems:
        return problems
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,95}", model_id):
        problems.append(f"{model_id}: ids are lower case, without spaces or ':'")
    if entry["repo"].count("/") != 1:
        problems.append(f"{model_id}: repo must be owner/name")
    if not entry["params_b"] > 0:
        problems.append(f"{model_id}: params_b must be positive")
    if entry["context"] < 512:
        problems.append(f"{model_id}: context must be at least 512")
    bad = [t for t in entry["tasks"] if t not in TASKS]
    if bad or not entry["tasks"]:
        problems.append(f"{model_id}: tasks must be some of {', '.join(TASKS)}")
    unknown = [q for q in entry["quants"] if str(q).upper() not in QUANT_BITS]
    if unknown or not entry["quants"]:
        problems.append(f"{model_id}: unknown quants {unknown}")
    arch = entry["arch"]
    for key in _ARCH_INTS:
        if not isinstance(arch.get(key), int) or arch[key] <= 0:
            problems.append(f"{model_id}: arch.{key} must be a positive integer")
    if "embd_type" in arch and str(arch["embd_type"]).upper() not in QUANT_BITS:
        problems.append(f"{model_id}: arch.embd_type {arch['embd_type']!r} is not a known type")
    if arch.get("heads") and arch.get("kv_heads") and arch["heads"] % arch["kv_heads"]:
        problems.append(f"{model_id}: arch.heads must be a multiple of arch.kv_heads")
    return problems


def _builtin_file() -> Path:
    package = Path(__file__).parent.parent
    # In the wheel it sits inside the package; in a source checkout at the repo root.
    inside = package / "models.toml"
    return inside if inside.is_file() else package.parent / "models.toml"


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


def load(user_file: Path | None = None) -> dict[str, CatalogModel]:
    """Every catalog model by id: the shipped list, then the user's file over it."""
    entries = _read(_builtin_file())
    user_file = user_file or paths().user_catalog
    if user_file.is_file():
        for model_id, over in _read(user_file).items():
            if not isinstance(over, dict):
                raise ConfigError(
                    f"bad catalog entry in {user_file}: models.{model_id} must be a table "
                    f"([models.{model_id}]), not {type(over).__name__}"
                )
            base = entries.get(model_id, {})
            if isinstance(over, dict) and isinstance(over.get("arch"), dict):
                over = {**over, "arch": {**base.get("arch", {}), **over["arch"]}}
            entries[model_id] = {**base, **over}
    catalog = {}
    for model_id, e in entries.items():
        problems = validate(model_id, e)
        if problems:
            where = user_file if user_file.is_file() else _builtin_file()
            raise ConfigError(f"bad catalog entry in {where}: " + "; ".join(problems))
        catalog[model_id] = CatalogModel(
            id=model_id,
            name=e["name"],
            repo=e["repo"],
            license=e["license"],
            gated=e["gated"],
            params_b=float(e["params_b"]),
            context=e["context"],
            tasks=tuple(e["tasks"]),
            quants=tuple(q.upper() for q in e["quants"]),
            arch=dict(e["arch"]),
        )
    return catalog


def split_id(text: str) -> tuple[str, str | None]:
    """``qwen2.5-1.5b-instruct:Q4_K_M`` -> (id, quant); the quant may be absent."""
    model_id, _, quant = text.partition(":")
    quant = {"FP16": "F16", "FP32": "F32"}.get(quant.upper(), quant.upper())  # Qwen's spelling
    return model_id.lower(), (quant or None)


def find(text: str, catalog: dict[str, CatalogModel] | None = None) -> tuple[CatalogModel, str]:
    """The catalog model and quant for ``ID[:QUANT]`` (Q4_K_M, or the nearest offered)."""
    catalog = catalog if catalog is not None else load()
    model_id, quant = split_id(text)
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
