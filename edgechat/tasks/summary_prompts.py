"""What the summariser says to the model: a chat request for an instruct model, a plain
completion cue for a base model (which never learned a chat template and only echoes
one). Kept apart so the wording can be tuned without touching the pipeline."""

from __future__ import annotations

from dataclasses import dataclass

PARTS = {"short": 3, "medium": 5, "long": 8}  # points a summary of each length makes


@dataclass(frozen=True)
class Options:
    length: str = "medium"
    style: str = "paragraph"  # paragraph | bullets
    focus: str | None = None
    check: bool = True  # every summary checked against its source (tasks/summary_check.py)


def tokens_for(n_words: float) -> int:
    """A token cap that lets ``n_words`` words through (about 1.3-1.5 tokens a word)."""
    return int(n_words * 1.7) + 24


def max_tokens(high: int) -> int:
    """The cap of a reply meant to stop near ``high`` words: room to finish a sentence."""
    return tokens_for(high * 2.2)


def tokens_of(n_words: float) -> float:
    """About how many tokens ``n_words`` words of English take (for the time left, not
    for caps)."""
    return n_words * 1.4 + 4


SYSTEM = (
    "You summarise documents faithfully. Keep the main points, names and figures; "
    "add nothing that is not in the text. Quote only the text's exact words."
)
SHAPES = {
    "short": "in two or three sentences",
    "medium": "in one paragraph",
    "long": "in a few paragraphs",
}
MAP_WORDS = 80  # a partial summary of one chunk
MORE = (
    "Continue the summary: add key points from the text that it does not cover yet, "
    "in the same style. Do not repeat what it already says."
)


def avoid(spans: list[str]) -> str:
    """Said after a request whose reply stated what the text does not hold."""
    if not spans:
        return ""
    named = ", ".join(f'"{a}"' for a in spans[:12])
    return f" The text does not contain {named}: do not write them."


def repair(sentence: str, avoid: list[str]) -> str:
    """The request to write ``sentence`` again without what the text does not hold."""
    named = ", ".join(f'"{a}"' for a in avoid)
    return (
        f'The text does not contain {named}. Write the sentence "{sentence}" again as one '
        "sentence that says only what the text says, quoting only its exact words, without "
        f"{named}."
    )


def instruction(options, part: str, n_words: int = 0) -> str:
    """The request for ``part``: map (a chunk), part (a share of the summary), final."""
    focus = f" Focus on what matters to this reader: {options.focus}." if options.focus else ""
    if part == "map":
        return (
            f"Summarise this part of a longer document in at most {n_words or MAP_WORDS} words, "
            f"keeping its key facts.{focus}"
        )
    if part == "part":
        shape = (
            "one or two sentences"
            if n_words <= 35
            else "a few sentences"
            if n_words <= 90
            else "a paragraph or two"
        )
        return (
            f"Summarise this section of a longer document in {shape}, about {n_words} "
            f"words, keeping its key facts. Write prose, not a list.{focus}"
        )
    style = (
        " Write it as a bulleted list, one point per line, each starting with '- '."
        if options.style == "bullets"
        else " Write it as prose, not a list."
    )
    return (
        f"Summarise the following text {SHAPES[options.length]}, in about {n_words} words."
        f"{style}{focus}"
    )


def messages(options, part: str, text: str, n_words: int = 0) -> list[dict]:
    """A chat request: the instructions first, so the engine's cache reuses them."""
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"{instruction(options, part, n_words)}\n\n{text}"},
    ]


def plain(options, part: str, text: str, n_words: int = 0) -> str:
    """The same request as text to continue: the document, then the cue."""
    size = f"about {n_words} words" if part != "map" else f"at most {n_words or MAP_WORDS} words"
    what = "this part of the document" if part in ("map", "part") else "the text above"
    focus = f", for a reader who cares about {options.focus}" if options.focus else ""
    return f"{text}\n\nSummary of {what}, in {size}{focus}:\n"
