"""How the CLI's tables fit 80 columns whatever the figures (a Pi over SSH, a terminal of
80x24): a figure too wide for its column loses decimals, then is written compactly
(10154 tokens/s in a 5-column cell: 10154; in 4: 10k); text too wide is cut with an
ellipsis, counted in terminal cells (a CJK title takes two a character), as rich counts
them; a label that must stay whole (an id to copy) goes on a line of its own."""

from __future__ import annotations

import math

WIDTH = 80
_SCALES = (("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12))


def compact(value: float, width: int, decimals: int = 1) -> str:
    """``value`` in at most ``width`` characters: with ``decimals`` where it fits, fewer
    where not, then with a k/M/G/T suffix (10.2k), then in e-notation."""
    if not math.isfinite(value):
        return str(value)[:width]
    for d in range(decimals, -1, -1):
        text = f"{value:.{d}f}"
        if len(text) <= width:
            return text
    for suffix, scale in _SCALES:
        for d in (1, 0):
            text = f"{value / scale:.{d}f}{suffix}"
            if len(text) <= width and abs(value / scale) < 999.95:
                return text
    text = f"{value:.0e}".replace("e+0", "e").replace("e+", "e")
    return text if len(text) <= width else "#" * width


def num(value: float | None, width: int, decimals: int = 1, suffix: str = "") -> str:
    """A figure right-aligned in exactly ``width`` columns ('-' where there is none);
    ``suffix`` (like '%') is part of the width."""
    if value is None:
        return f"{'-':>{width}}"
    return f"{compact(value, width - len(suffix), decimals) + suffix:>{width}}"


def cells(text: str) -> int:
    """Terminal columns ``text`` takes."""
    from rich.cells import cell_len

    return cell_len(text)


def cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` terminal columns: cut with '…' where it is longer."""
    from rich.cells import set_cell_size

    if cells(text) <= width:
        return text
    return set_cell_size(text, max(0, width - 1)).rstrip() + "…"


def pad(text: str, width: int) -> str:
    """``text`` cut to ``width`` columns and padded to exactly that many."""
    text = cut(text, width)
    return text + " " * (width - cells(text))


def labelled(label: str, width: int, rest: str) -> list[str]:
    """A row that starts with a label to keep whole (an id to copy): padded to ``width``
    before ``rest`` where it fits, else on a line of its own with ``rest`` under it."""
    if cells(label) <= width:
        return [f"{label}{' ' * (width - cells(label))} {rest}".rstrip()]
    return [label, f"{'':<{width}} {rest}".rstrip()]


def wrap(text: str, indent: int, width: int = WIDTH, first: int | None = None) -> list[str]:
    """``text`` as lines of at most ``width`` columns, indented by ``indent`` (the first
    by ``first`` where given), never cut inside a word or a hyphenated name."""
    import textwrap

    lines = textwrap.wrap(
        text,
        width,
        initial_indent=" " * (indent if first is None else first),
        subsequent_indent=" " * indent,
        break_on_hyphens=False,
    )
    return lines or [""]


def size(n: int | None, width: int) -> str:
    """A size as every command writes it (format_size), right-aligned in exactly ``width``
    columns: whole GiB, then compact ones, where the usual form is too wide."""
    from edgechat.facts.device import GiB, format_size

    text = format_size(n)
    if len(text) > width and n is not None:
        text = compact(n / GiB, max(1, width - 4), 0) + " GiB"
    return f"{cut(text, width):>{width}}"
