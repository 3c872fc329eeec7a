"""Reading a remote server's streamed reply, the same for OpenAI's API (llama/remote.py)
and Ollama's (llama/remote_ollama.py): each API opens its stream and reads its parts;
the counting, the cancel, a stream cut short and the one-line errors are here."""

from __future__ import annotations

import time
from collections.abc import Iterator

from edgechat.errors import EdgechatError


class Relay:
    """How a streamed reply went, for its Stats: its pieces, their times, how it ended."""

    def __init__(self) -> None:
        self.t0 = self.t_first = self.t_last = time.perf_counter()
        self.n_chunks = 0
        self.finish: str | None = None  # still None after: the reader stopped early

    @property
    def ended(self) -> str:
        return self.finish or "cancelled"

    def ttft(self) -> float:
        return (self.t_first - self.t0) if self.n_chunks else 0.0


def relay(engine, start, pieces, run: Relay) -> Iterator[str]:
    """The text of a streamed reply from a remote ``engine`` (llama/remote.py), one API's
    stream opened by ``start()`` and read as (text, finish reason) by ``pieces``, counted
    in ``run``: a stream that stops without its end, or breaks, is said in one error,
    and the stream is closed."""
    stream = None
    try:
        stream = start()
        for text, reason in pieces(stream):
            if text:
                run.n_chunks += 1
                run.t_last = time.perf_counter()
                if run.n_chunks == 1:
                    run.t_first = run.t_last
                yield text
            if reason:
                run.finish = "length" if reason == "length" else "stop"
            if engine._cancel.is_set():
                run.finish = "cancelled"
                break
        if run.finish is None:
            run.finish = "cut"
            raise engine._cut(run.n_chunks)
    except GeneratorExit:
        raise
    except EdgechatError:
        run.finish = "cut"
        raise
    except Exception as exc:
        run.finish = "cut"
        raise engine._explain(exc) from None
    finally:
        if stream is not None:
            stream.close()
