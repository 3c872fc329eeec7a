"""What `edgechat estimate` (and `models info`) was asked about: a file on disk, a remote
GGUF's header, an installed id, or a catalog entry not yet pulled."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgechat.errors import EdgechatError, ModelNotFound
from edgechat.models.registry import resolve

if TYPE_CHECKING:
    from edgechat.facts.gguf import ModelFacts
    from edgechat.planning.memory import Shape


@dataclass(frozen=True)
class Target:
    """A model to estimate: a file on disk, a remote GGUF, or a catalog entry not yet pulled."""

    label: str
    source: str  # file | url | catalog
    shape: Shape
    path: Path  # the file, or a stand-in naming the repo and quant
    quant: str | None
    facts: ModelFacts | None = None  # the header, when there is a file or URL


def locate(text: str, default_model: str = "", warn=None) -> Target:
    """What ``edgechat estimate`` was asked about: a path, URL, installed id or ID[:QUANT].

    ``warn`` hears of catalog entries left out, when the catalog is read."""
    from edgechat.facts import gguf
    from edgechat.planning import catalog
    from edgechat.planning.memory import Shape

    if text.startswith(("http://", "https://")):
        facts = gguf.inspect_url(text)
        return Target(text, "url", Shape.from_facts(facts), Path(text), facts.file_type, facts)
    try:
        path = resolve(text, default_model)
    except ModelNotFound as missing:
        if Path(text).suffix.lower() == ".gguf" or "/" in text:
            raise
        try:
            model, quant = catalog.find(text, warn=warn)
        except EdgechatError as not_listed:
            # a catalog model without that quant, or one left out for a bad value
            if " in the catalog; " in str(not_listed) or isinstance(not_listed, catalog.LeftOut):
                raise
            close = re.search(r"Did you mean: [^?]*\?", str(not_listed))
            hint = close.group(0) if close else ""
            raise ModelNotFound(
                f"nothing to estimate for '{text}': not a GGUF file, an http(s) URL, an "
                f"installed model or a catalog id.{' ' + hint if hint else ''} Installed: "
                "`edgechat models list`; the catalog: `edgechat recommend --all`"
            ) from missing
        stand_in = Path(model.repo) / quant
        return Target(f"{model.id}:{quant}", "catalog", model.shape(quant), stand_in, quant)
    facts = gguf.inspect_file(path)
    return Target(str(path), "file", Shape.from_facts(facts), path, facts.file_type, facts)
