"""The app's model session: the one object that owns the loaded engine and the llama
thread every llama.cpp call runs on. It loads a model (through ``service.open_model``)
or connects to a server, closes what a new model replaces, streams replies, keeps the
KV snapshots that let a long chat reopen without being read again, and is where the
readouts come from.

It tells the app what changed by posting messages (``ModelLoading``, ``ModelLoaded``,
``ModelFailed``, ``ModelWarning``), each carrying the new ``ModelState``; the app turns
them into notifications and into its ``model_state`` reactive, which screens watch.
State changes happen on the app's thread (``soon``), so a screen never sees half of one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from textual.message import Message

from edgechat.errors import EdgechatError
from edgechat.tui.widgets import UI_BATCH_S, Finished, Token

if TYPE_CHECKING:
    from edgechat.llama.contract import ChatEngine
    from edgechat.llama.state import Restored, Snapshots
    from edgechat.planning.plan import Sampling
    from edgechat.service import Loaded, ModelRequest

Post = Callable[[Message], object]
Soon = Callable[..., bool]  # soon(fn, *args): run fn on the app's thread; False: it has gone
Opener = Callable[..., "Loaded"]  # opener(request, *, say, device, run) -> Loaded


@dataclass(frozen=True)
class ModelState:
    """What the screens show of the model; replaced whole at each change."""

    engine: ChatEngine | None = None
    label: str | None = None  # an installed id, a file name, or "model @ host"
    loading: bool = False  # a load (or a connection) is under way
    error: str | None = None  # why the last load failed
    refusal: str | None = None  # why this model cannot chat (a base model)

    def greeting(self) -> str:
        """The line an empty chat shows: what to do next with this model."""
        if self.loading:
            return "Loading the model ..."
        if self.engine is None:
            why = f" ({self.error})" if self.error else ""
            return f"No model is loaded{why}. Ctrl+P, then Choose a model."
        if self.refusal:
            return self.refusal
        if not self.engine.is_local:
            return (
                f"{self.label} runs on {self.engine.where}: what you type is sent there and "
                "answered there, not on this machine. Enter sends, Esc stops a reply."
            )
        return (
            f"{self.label} is ready. Enter sends, Ctrl+J adds a line, Esc stops a "
            "reply, Ctrl+R writes it again, F3 edits your last message, Ctrl+P lists "
            "every command."
        )


class ModelChanged(Message):
    """The model's state changed; ``state`` is the new one."""

    def __init__(self, state: ModelState) -> None:
        super().__init__()
        self.state = state


class ModelLoading(ModelChanged):
    """A load or a connection started."""


class ModelLoaded(ModelChanged):
    """A model is in use. ``warnings``: what the user must hear (a capped context, a
    forced load); ``remember``: it was picked, so it becomes the default model."""

    def __init__(self, state: ModelState, warnings: tuple[str, ...], remember: bool) -> None:
        super().__init__(state)
        self.warnings, self.remember = warnings, remember


class ModelFailed(ModelChanged):
    """The load failed (the model in use before, if any, stays); ``why`` says what to do;
    ``remote``: it was a server that could not be used."""

    def __init__(self, state: ModelState, why: str, remote: bool = False) -> None:
        super().__init__(state)
        self.why, self.remote = why, remote


class ModelWarning(Message):
    """Something the user should hear that changes nothing (a snapshot not saved)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


def open_model(request: ModelRequest, *, say, device, run) -> Loaded:
    """The default opener: ``service.open_model``, with llama.cpp's libraries loaded on
    the llama thread first (before gguf imports numpy: see llama/backend.py)."""
    from edgechat import service
    from edgechat.llama import backend

    if not request.remote:
        run(backend.load)
    return service.open_model(request, say=say, device=device, run=run)


class ModelSession:
    """The loaded engine, the llama thread, loading, closing and the KV snapshots.

    ``post`` is where its messages go (thread-safe; the app's ``post_message``), ``soon``
    runs a state change on the app's thread (the app's ``call_later``). ``llama``: a
    thread to share (a benchmark's); ``opener``: how a request becomes an engine (tests
    hand in a fake); ``sample_readouts``: the memory readouts' source.
    """

    def __init__(
        self,
        device,
        snapshots: Snapshots,
        *,
        post: Post,
        soon: Soon,
        llama: ThreadPoolExecutor | None = None,
        opener: Opener | None = None,
        sample_readouts: Callable | None = None,
    ) -> None:
        self.device = device
        self.snapshots = snapshots
        self.state = ModelState()
        self._post, self._soon = post, soon
        # Every llama.cpp call runs on this one thread: its OpenMP thread team belongs to
        # the calling thread, and a second team (from a load or reply on another
        # thread) competes for the cores and slows generation by a third on two cores.
        self._own_llama = llama is None
        self.llama = llama or ThreadPoolExecutor(1, thread_name_prefix="llama")
        # Plans and connections are made here, off the app's thread; loads are queued
        # one after another, and only the newest asked for is kept (``_ticket``), but
        # for a model that finishes loading while a server is being reached with nothing
        # else in use: it is used meanwhile, so a server that cannot be reached leaves
        # the chat a model (a server takes no memory here to wait for).
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="model-load")
        self._opener = opener or open_model
        if sample_readouts is None:
            from edgechat.facts.readouts import Sampler

            sample_readouts = Sampler()
        self._sample = sample_readouts
        self._ticket = 0
        self._newest_remote = False  # the newest load asked for is a server's
        self._borrowed: ChatEngine | None = None  # handed in loaded: its owner closes it
        self._kv_conversation: int | None = None  # whose tokens the context holds
        self.last_restore: Restored | None = None  # what the last reopen found
        self._closed = False

    @property
    def engine(self) -> ChatEngine | None:
        return self.state.engine

    @property
    def label(self) -> str | None:
        return self.state.label

    # -- loading ------------------------------------------------------------------------

    def load(self, request: ModelRequest, *, remember: bool = False) -> Future:
        """Open ``request``'s model (or server) off the app's thread; the model in use
        stays until the new one is ready, then is closed. ``remember``: picked by the
        user, so ``ModelLoaded`` says to make it the default."""

        def opening(say, run) -> Loaded:
            return self._opener(request, say=say, device=self.device, run=run)

        return self._start(opening, request.ctx, remember, bool(request.remote))

    def adopt(self, engine: ChatEngine, label: str, wanted_ctx: int) -> Future:
        """Use an engine loaded elsewhere (a benchmark's); it is never closed here."""
        from edgechat.service import Loaded

        self._borrowed = engine
        return self._start(lambda say, run: Loaded(engine, None, None, (), label), wanted_ctx)

    def _start(self, opening, wanted_ctx: int, remember=False, remote=False) -> Future:
        self._ticket += 1
        self._newest_remote = remote
        self.state = replace(self.state, loading=True)
        self._post(ModelLoading(self.state))
        args = (self._ticket, opening, wanted_ctx, remember, remote)
        return self._loader.submit(self._open, *args)

    def _open(self, ticket: int, opening, wanted_ctx: int, remember: bool, remote: bool) -> None:
        """On the loader thread: open, check, then hand over on the app's thread."""
        from edgechat.service import chat_check

        def run(fn, *args):
            return self.llama.submit(fn, *args).result()

        said: list[str] = []
        loaded = None
        try:
            loaded = opening(said.append, run)
            check = chat_check(loaded.engine, wanted_ctx)  # metadata only: no llama thread
        except Exception as e:  # any failure is the user's to hear, not a crash
            if loaded is not None:
                self._close(loaded.engine)
            why = str(e) if isinstance(e, EdgechatError) else f"{type(e).__name__}: {e}"
            self._soon(self._failed, ticket, why, remote)
            return
        said = said if loaded.engine.is_local else []  # a server's notice is the greeting's
        warnings = (*said, *check.warnings)
        if not self._soon(self._opened, ticket, loaded, check.refusal, warnings, remember):
            self._close(loaded.engine)  # the app has gone meanwhile

    def _opened(self, ticket: int, loaded: Loaded, refusal, warnings, remember) -> None:
        outdated = ticket != self._ticket  # a newer load was asked for meanwhile
        meanwhile = outdated and self._newest_remote and self.state.engine is None
        if self._closed or (outdated and not meanwhile):
            self._close(loaded.engine)
            return
        old = self.state.engine
        refusal = f"{refusal} (Ctrl+P → Choose a model)" if refusal else None
        self.state = ModelState(loaded.engine, loaded.label, loading=outdated, refusal=refusal)
        self._kv_conversation = None
        self._close(old)
        self._post(ModelLoaded(self.state, tuple(warnings), remember))

    def _failed(self, ticket: int, why: str, remote: bool) -> None:
        if ticket == self._ticket and not self._closed:
            self.state = replace(self.state, loading=False, error=why)
            self._post(ModelFailed(self.state, why, remote))

    def _close(self, engine: ChatEngine | None) -> None:
        """Stop its reply and free it on the llama thread, after what is queued there."""
        if engine is None or engine is self._borrowed:
            return
        engine.cancel()
        try:
            self.llama.submit(engine.close)
        except RuntimeError:  # the llama thread has stopped: the app is closing
            engine.close()

    def close(self) -> None:
        """Free the engine and stop the threads (the app is closing)."""
        self._closed = True
        self._close(self.state.engine)
        self.state = ModelState()
        self._loader.shutdown(wait=False, cancel_futures=True)
        if self._own_llama:
            self.llama.shutdown(wait=False)

    # -- replies ------------------------------------------------------------------------

    def run(self, fn, *args) -> Future:
        """Run ``fn(*args)`` on the llama thread (a summary, a count)."""
        return self.llama.submit(fn, *args)

    def reply(
        self,
        conversation_id: int,
        chat: list[dict],
        partial: str | None,
        sampling: Sampling,
        post: Post,
    ) -> Future:
        """Write a reply to ``chat`` (with ``partial``, more of that reply) on the llama
        thread, its text handed to ``post`` as ``Token`` messages, then ``Finished``."""
        return self.llama.submit(self._stream, conversation_id, chat, partial, sampling, post)

    def cancel(self) -> None:
        """Stop the reply being written (after the current token)."""
        if self.state.engine is not None:
            self.state.engine.cancel()

    def _stream(self, conversation_id, chat, partial, sampling, post) -> None:
        engine = self.state.engine
        try:
            if partial is None:
                reply = engine.chat(chat, sampling)
            else:
                reply = engine.continue_reply(chat, partial, sampling)
            # In batches (UI_BATCH_S): rendering each token would take CPU from llama.cpp.
            pending, sent_at = [], 0.0
            for piece in reply:
                pending.append(piece)
                now = time.monotonic()
                if now - sent_at >= UI_BATCH_S:
                    post(Token("".join(pending)))
                    pending, sent_at = [], now
            if pending:
                post(Token("".join(pending)))
            post(Finished(reply.stats, reply.dropped))
        except EdgechatError as e:
            post(Finished(None, 0, str(e)))
            return
        self._save_snapshot(engine, conversation_id)  # after the screen has the reply

    # -- KV snapshots: reopening a long chat without reading it again --------------------

    def conversation_opened(self, conversation_id: int) -> None:
        """Bring back the conversation's KV cache, on the llama thread, before the next
        reply needs it (a reply queued meanwhile waits for it there)."""
        from edgechat.llama.state import can_snapshot

        engine = self.state.engine
        if engine is None or self._kv_conversation == conversation_id:
            return
        self._kv_conversation = conversation_id
        if can_snapshot(engine):
            self.llama.submit(self._restore, engine, conversation_id)

    def _restore(self, engine: ChatEngine, conversation_id: int) -> None:
        if engine is self.state.engine and self._kv_conversation == conversation_id:
            self.last_restore = self.snapshots.restore(engine, conversation_id)

    def _save_snapshot(self, engine: ChatEngine, conversation_id: int) -> None:
        """On the llama thread, after a reply: keep the context for a later reopen."""
        from edgechat.llama.state import can_snapshot

        self._kv_conversation = conversation_id
        if not can_snapshot(engine):
            return
        try:
            self.snapshots.save(engine, conversation_id)
        except OSError as e:  # a full disk costs the fast reopen, nothing else
            self._post(ModelWarning(f"KV snapshot not saved: {e}"))

    def context_replaced(self) -> None:
        """The context holds something else now (a summary): reopening restores again."""
        self._kv_conversation = None

    def drop_snapshot(self, conversation_id: int) -> None:
        self.snapshots.drop(conversation_id)

    # -- readouts -----------------------------------------------------------------------

    def readouts(self):
        """This process's memory, the machine's RAM and GPU memory, now."""
        return self._sample()
