"""What is still ahead of a summary, in tokens, for its time left (tasks/progress.py).

The chunks not yet summarised are read whole and each writes a partial summary as long
as the ones written so far; the partial summaries are then read again, shared out among
the parts, and each part writes its share of the summary's words. A part whose partial
summaries do not fit one call is condensed first (read once more, in map-sized calls).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgechat.tasks.progress import Ahead
from edgechat.tasks.summary_prompts import tokens_of


@dataclass(frozen=True)
class Shape:
    """The run's sizes, in tokens, as the summariser measured them."""

    map_overhead: int  # the prompt around one chunk
    part_overhead: int  # the prompt around one part's text
    map_budget: int  # the most text one map call reads
    parts: int  # parts the summary is written in
    summary_words: int  # the words the whole summary aims at


def parts_ahead(
    sizes: Sequence[float], share_words: float, shape: Shape, budget: int, note: float
) -> Ahead:
    """The parts still to write, of ``sizes`` tokens of text each, each writing
    ``share_words``; one over its call's ``budget`` is condensed first (its partial
    summaries of ``note`` tokens read and written again, in map-sized calls)."""
    ahead = Ahead(
        sum(sizes) + len(sizes) * shape.part_overhead, len(sizes) * tokens_of(share_words)
    )
    for size in sizes:
        if size > budget:
            calls = size // shape.map_budget + 1
            ahead += Ahead(size + calls * shape.map_overhead, calls * note)
    return ahead


def notes_ahead(n_notes: int, note: float, shape: Shape, budget: int) -> Ahead:
    """The writing stage over ``n_notes`` partial summaries of ``note`` tokens each."""
    n_parts = min(shape.parts, n_notes)
    if not n_parts:
        return Ahead()
    sizes = [n_notes / n_parts * (note + 2)] * n_parts
    return parts_ahead(sizes, shape.summary_words / n_parts, shape, budget, note)


def maps_ahead(sizes: Sequence[int], n_notes: int, note: float, shape: Shape, budget: int):
    """The chunks of ``sizes`` tokens still to summarise, then the writing stage over all
    ``n_notes`` partial summaries (those written and those to come)."""
    reading = Ahead(sum(sizes) + len(sizes) * shape.map_overhead, len(sizes) * note)
    return reading + notes_ahead(n_notes, note, shape, budget)


def note_size(written: Sequence[int], map_words: int) -> float:
    """The tokens a partial summary takes: as long as those so far (before the first:
    the words asked of it)."""
    return sum(written) / len(written) if written else tokens_of(map_words * 0.8)
