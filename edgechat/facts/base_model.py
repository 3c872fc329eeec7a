"""Whether a model can hold a chat at all, from what its file says.

A base (pre-trained only) model ships without a chat template: handed a chat it
continues the transcript in garbage. A tuned model whose file lacks the template is
still served (by its family's format): its name says it was tuned. One rule, for
`chat` and the app (which refuse a base model after loading it), `config set
default_model` (which refuses one before) and `recommend` (which leaves one out of chat).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgechat.facts.gguf import ModelFacts

# Names of tuned models: "...-Instruct", "...-it", "...-chat", "...-sft" ...
_TUNED = re.compile(r"(instruct|chat|(^|[-_. ])it($|[-_. ])|sft|dpo|rlhf|assistant)", re.I)


def is_base_model(has_template: bool, names: Iterable[str | None]) -> bool:
    """No chat template, and no name (general.name, general.finetune, the file's stem)
    that says the model was tuned to answer."""
    return not has_template and not any(_TUNED.search(n or "") for n in names)


def header_is_base_model(facts: ModelFacts) -> bool:
    """The same rule on a header read with ``facts.gguf.inspect_file``."""
    stem = Path(facts.source).stem
    return is_base_model(facts.chat_template, (facts.name, facts.finetune, stem))
