"""What every engine offers, written once: the llama.cpp engine (``llama/engine.py``),
a server reached over HTTP (``llama/remote.py``) and the tests' fake all keep this
contract, so front ends and tasks never ask which one they hold.

To add an engine: a class with these members, opened in ``service.open_model``. An
engine that evaluates prompts itself may also have ``on_prompt``: a callback it calls
after each batch of a prompt with (tokens evaluated, tokens to evaluate), or None.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from edgechat.llama.prompts import Message
    from edgechat.llama.reply import Reply, Stats
    from edgechat.planning.plan import Sampling


def reply_reserve(max_tokens: int, n_ctx: int) -> int:
    """Tokens kept free after a prompt for the reply: the reply's cap, but never more
    than a quarter of the context (a long cap must not crowd out the conversation)."""
    return max(1, min(max_tokens, n_ctx // 4))


@runtime_checkable
class ChatEngine(Protocol):
    """A model that answers. ``cancel`` is safe from any thread; the rest is called
    from one thread at a time (the app's llama thread, the server's worker)."""

    is_local: bool  # runs in this process: its memory, KV cache and snapshots are here
    where: str  # where the text goes, for the user: "this machine" or a server's host
    n_ctx: int  # context size in tokens
    n_ctx_used: int  # tokens the context holds now
    load_s: float  # seconds the load (or the connection) took
    last_stats: Stats | None  # the last reply's figures, once it has ended

    def info(self) -> dict[str, Any]:
        """Facts for display and --json: name, path or url, n_ctx ..."""

    def chat(
        self, messages: Sequence[Message], sampling: Sampling | None = None, *, drop_oldest=True
    ) -> Reply:
        """Stream the reply to a conversation; with ``drop_oldest`` the oldest turns make
        way when the context is full, otherwise ContextOverflow."""

    def complete(self, prompt: str, sampling: Sampling | None = None) -> Reply:
        """Stream the continuation of raw text (no chat template)."""

    def continue_reply(
        self, messages: Sequence[Message], partial: str, sampling: Sampling | None = None
    ) -> Reply:
        """Stream more of an assistant reply that ended early."""

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list:
        """Tokens of ``text`` (estimated where the engine has no tokenizer)."""

    def prompt_tokens(self, messages: Sequence[Message]) -> list:
        """Tokens of the whole chat prompt for ``messages``."""

    def fit(self, messages: Sequence[Message], reserve: int) -> tuple[list, int, list]:
        """(kept messages, how many dropped, prompt tokens) leaving ``reserve`` free."""

    def clear_cache(self) -> None:
        """Forget cached tokens: the next reply evaluates its whole prompt."""

    def cancel(self) -> None:
        """Stop the reply in progress after the current token."""

    def close(self) -> None:
        """Free the model (or the connection)."""
