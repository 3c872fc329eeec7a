"""Whether a loaded model can hold a chat at all.

A base (pre-trained only) model ships without a chat template: handed a chat it
continues the transcript in garbage. Front ends refuse to chat with one and say why,
rather than show nonsense with no word of explanation.
"""

from __future__ import annotations


def base_model_reason(engine) -> str | None:
    """A one-line reason when ``engine`` holds a base model, else None."""
    from edgechat.facts.base_model import is_base_model

    if engine.info().get("chat_template"):
        return None  # an engine that is not llama.cpp's (remote, fake) may have no meta()
    names = (engine.meta("general.name"), engine.meta("general.finetune"))
    if not is_base_model(False, (*names, engine.plan.model_path.stem)):
        return None  # a tuned model whose file lacks the template: the fallback serves it
    return (
        f"{engine.plan.model_path.name} is a base model (its file has no chat template): it "
        "continues text but cannot answer messages; choose an instruct or chat model "
        "(`edgechat recommend` lists them)"
    )
