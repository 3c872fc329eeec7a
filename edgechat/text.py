"""Make text from a file or the network safe to show in a terminal.

A GGUF's ``general.name``, a chat template or a hub file name is data someone else
wrote: an escape sequence in it can set the terminal's title, clear the screen or
hide what follows. Everything shown that came from outside passes through ``clean``
(the CLI's renderers and the app alike).
"""

from __future__ import annotations

import re

# C0 and C1 control characters, DEL, and the bidi overrides that reorder what is shown.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clean(value, keep_newlines: bool = False) -> str:
    """``value`` as text with control and escape characters replaced by a visible '?'."""
    text = value if isinstance(value, str) else str(value)
    if keep_newlines:
        text = text.replace("\r\n", "\n")
    else:
        text = text.replace("\n", " ").replace("\t", " ")
    return _CONTROL.sub("?", text)


def plural(n: float, word: str, many: str = "") -> str:
    """``n`` and ``word`` in its plural form where ``n`` is not 1: 1 CPU, 2 CPUs, 1.5 CPUs
    (``many`` where adding an s is wrong)."""
    shown = str(n) if isinstance(n, int) else f"{n:g}"
    return f"{shown} {word if n == 1 else many or word + 's'}"
