"""What a sequence's KV cache holds, kept between replies: a prompt that starts the
same way (the next turn of a conversation) evaluates only what is new. Shared by the
single-sequence engine and the batch engine's slots (one sequence each)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgechat.llama.engine import Engine


def keep_prefix(engine: Engine, seq: int, cached: list[int], tokens: Sequence[int]) -> int:
    """Keep what sequence ``seq``'s cache holds (``cached``, trimmed to match) of the
    prompt ``tokens``, from the start; drop the rest. Returns how many are kept."""
    lc = engine._lc
    n = 0
    limit = min(len(cached), len(tokens) - 1)  # always evaluate one token for logits
    while n < limit and cached[n] == tokens[n]:
        n += 1
    mem = lc.llama_get_memory(engine._ctx)
    if n and not lc.llama_memory_seq_rm(mem, seq, n, -1):
        n = 0
    # Sliding-window layers forget old positions; reuse only what they still hold.
    n_swa = engine._n_swa
    if n and n_swa > 0 and lc.llama_memory_seq_pos_min(mem, seq) > max(0, n - n_swa):
        n = 0
    if n == 0:
        lc.llama_memory_seq_rm(mem, seq, -1, -1)
    del cached[n:]
    return n


def worth_copying(saved: int, n_ctx: int) -> bool:
    """Whether copying another slot's cache (the whole of it: n_ctx cells) beats reading
    ``saved`` tokens again. Both costs grow with the model's size, and the copy's with
    the context: on two cores SmolLM2 reads a prompt token in 3.5 ms and copies a
    2048-cell cache in 7 ms (8192: 24 ms), so one token saved per 512 cells, and at
    least 4, keeps a margin of two."""
    return saved >= max(4, n_ctx // 512)


def shared(cached: list[int], tokens: list[int]) -> int:
    """How many tokens ``tokens`` shares with ``cached`` from the start (at most all
    but its last, which is read again for its logits)."""
    n, m = 0, min(len(cached), len(tokens) - 1)
    while n < m and cached[n] == tokens[n]:
        n += 1
    return n
