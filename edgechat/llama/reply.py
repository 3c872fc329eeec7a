"""A streaming reply and what it cost."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgechat.llama.engine import Engine


@dataclass(frozen=True)
class Stats:
    """What one reply cost. Rates are tokens per second of wall-clock time."""

    load_s: float
    prompt_tokens: int  # tokens in the whole prompt
    prompt_eval_tokens: int  # of those, evaluated now (the rest were cached)
    prompt_s: float
    gen_tokens: int
    gen_s: float  # from the first generated token to the last
    ttft_s: float  # from the request to the first token of the reply
    n_ctx_used: int
    n_ctx: int
    finish: str  # stop | length | context | cancelled
    dropped_messages: int = 0
    threads: int = 0  # CPU threads that generated it (0: not known, a remote model)

    @property
    def prompt_tps(self) -> float:
        return self.prompt_eval_tokens / self.prompt_s if self.prompt_s > 0 else 0.0

    @property
    def gen_tps(self) -> float:
        # The first token's time belongs to the prompt; rate the ones after it.
        return (self.gen_tokens - 1) / self.gen_s if self.gen_tokens > 1 and self.gen_s > 0 else 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["prompt_tps"] = round(self.prompt_tps, 2)
        d["gen_tps"] = round(self.gen_tps, 2)
        return d


class Reply:
    """A streaming reply: iterate for text pieces; ``text`` and ``stats`` afterwards.

    The remote engine's replies are the same: closing its stream closes the HTTP response.
    """

    def __init__(self, pieces: Generator[str, None, None], engine: Engine, dropped: int) -> None:
        self._pieces = pieces
        self._engine = engine
        self.dropped = dropped
        self.text = ""
        self.stats: Stats | None = None

    def __iter__(self) -> Iterator[str]:
        try:
            for piece in self._pieces:
                self.text += piece
                yield piece
        finally:
            self._pieces.close()  # an early exit stops generation at once
            self.stats = self._engine.last_stats

    def collect(self) -> str:
        for _ in self:
            pass
        return self.text
