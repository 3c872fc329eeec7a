"""Quality against size, drawn with plain characters for any terminal (80 columns, a Pi
over SSH): each candidate a letter, the pick a star, the budget a dashed line."""

from __future__ import annotations

import math

from edgechat.facts.device import format_size

MARKS = "abcdefghijklmnopqrstuvwxyz"
PICK = "*"


def quality_vs_size(
    points: list[tuple[str, int, float]],
    budget: float | None = None,
    pick: str | None = None,
    width: int = 80,
    height: int = 12,
) -> list[str]:
    """``points``: (candidate id, file bytes, mean KLD). Lines of at most ``width``."""
    if not points:
        return []
    label_w = 8
    plot_w = max(20, width - label_w - 2)
    floor = 1e-6
    values = [max(k, floor) for _, _, k in points] + ([budget] if budget else [])
    top, bottom = math.log10(max(values) * 1.6), math.log10(min(values) / 1.6)
    small, big = min(s for _, s, _ in points), max(s for _, s, _ in points)

    def row(kld: float) -> int:
        return round((top - math.log10(max(kld, floor))) / (top - bottom) * (height - 1))

    def col(size: int) -> int:
        if big == small:
            return plot_w // 2
        return round((size - small) / (big - small) * (plot_w - 1))

    grid = [[" "] * plot_w for _ in range(height)]
    budget_row = row(budget) if budget else None
    if budget_row is not None:
        grid[budget_row] = list(("- " * plot_w)[:plot_w])
    legend = []
    others = iter(MARKS)
    for cid, size, kld in sorted(points, key=lambda p: p[1]):
        mark = PICK if cid == pick else next(others, "?")
        legend.append(f"{mark} {cid}")
        r, c = row(kld), col(size)
        step = 1
        while grid[r][c] not in (" ", "-") and 0 <= c + step < plot_w:
            c += step  # a neighbour already there: the next free column to the right
        grid[r][c] = mark
    ticks = {0: top, height - 1: bottom}
    if budget_row is not None:
        ticks[budget_row] = math.log10(budget)
    lines = ["mean KLD against the source (log scale, lower is better)"]
    for r, cells in enumerate(grid):
        tick = f"{10 ** ticks[r]:.2g}" if r in ticks else ""
        if r == budget_row:
            tick = f"{budget:.2g}"
        lines.append(f"{tick:>{label_w}} |{''.join(cells)}".rstrip())
    lines.append(f"{'':>{label_w}} +{'-' * plot_w}")
    left, right = format_size(small), format_size(big)
    axis = f"{left}{'file size':^{plot_w - len(left) - len(right)}}{right}"
    lines.append(f"{'':>{label_w}}  {axis}")
    if budget_row is not None:
        legend.append("- - the budget")
    line = ""
    for item in legend:  # whole items a line, never one cut in two
        if line and len(line) + 3 + len(item) > width:
            lines.append(line)
            line = item
        else:
            line = f"{line}   {item}" if line else item
    return [*lines, line]
