"""Summarise a text that fits in the model's context (long documents: a later step)."""

from __future__ import annotations

from dataclasses import replace

from edgechat.engine import Engine, Reply
from edgechat.errors import ContextOverflow
from edgechat.plan import Sampling

SYSTEM = (
    "You summarise documents faithfully. Keep the main points, names and figures; "
    "add nothing that is not in the text."
)


def messages_for(text: str) -> list[dict]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Summarise the following text.\n\n{text.strip()}"},
    ]


def summarise(engine: Engine, text: str, sampling: Sampling | None = None) -> Reply:
    """Stream a summary of ``text``; raises ContextOverflow when it does not fit."""
    sampling = sampling or Sampling(temperature=0.3, max_tokens=400)
    sampling = replace(sampling, max_tokens=min(sampling.max_tokens, max(64, engine.n_ctx // 4)))
    try:
        return engine.chat(messages_for(text), sampling, drop_oldest=False)
    except ContextOverflow as exc:
        raise ContextOverflow(f"the document is too long to summarise in one pass: {exc}") from None
