"""The chat screen: conversations, streamed Markdown replies, input with history, readouts.

Every key here works while the message box has focus (it always has): none of them is
one of the box's own editing keys (Ctrl+A/E/K/U/W/Y/Z/D/C/V/X).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, ListView, Markdown, TextArea

from edgechat.tasks.dbopen import StoreError
from edgechat.tui.actions import ChatActions
from edgechat.tui.chatlist import ChatList
from edgechat.tui.widgets import (
    ChatInput,
    ChatView,
    Finished,
    Readouts,
    Token,
    UserText,
    vram_text,  # noqa: F401 - where tests and readers look for it
)

# How often a streaming reply is written to its row: a process killed mid-reply (a
# native fault in llama.cpp runs no Python after it) leaves the reply on disk up to
# about this long before the end. Text reaches the screen every UI_BATCH_S (0.5 s on
# two cores), so there each batch is saved; more often, at most this often.
SAVE_EVERY_S = 0.4
# How long typing pauses before the draft is saved (and its tokens counted).
TYPED_SETTLE_S = 0.3

# Why a reply ended early, as the screen says it (Ctrl+G continues any of them).
UNFINISHED = {
    "cancelled": "stopped: the reply is partial · Ctrl+G continues it",
    "length": "cut at the reply length limit · Ctrl+G continues it",
    "context": "the context is full: the reply is partial",
    None: "unfinished reply · Ctrl+G continues it",
}


def _markup_safe(text) -> str:
    """An error or name to show in a widget: no control characters, no Rich markup."""
    from rich.markup import escape

    from edgechat.text import clean

    return escape(clean(str(text)))


class ChatScreen(ChatActions, ChatList, Screen):
    BINDINGS = [
        Binding("escape", "stop", "Stop"),
        Binding("ctrl+n", "new_conversation", "New"),
        Binding("ctrl+s", "export", "Export"),
        Binding("ctrl+t", "copy_reply", "Copy"),
        Binding("ctrl+f", "search", "Search"),
        Binding("ctrl+o", "settings", "Settings"),
        Binding("ctrl+p", "command_palette", "Commands"),
        Binding("ctrl+b", "toggle_sidebar", "Chats", show=False),
        Binding("ctrl+r", "regenerate", "Regenerate", show=False),
        Binding("ctrl+g", "continue_reply", "Continue", show=False),
        Binding("f2", "rename", "Rename", show=False),
        Binding("f3", "edit_last", "Edit last message", show=False),
        Binding("f4", "copy_code", "Copy a code block", show=False),
        Binding("f8", "delete", "Delete chat", show=False),
    ]
    generating = reactive(False)

    def __init__(self) -> None:
        super().__init__()
        self.conversation = None
        self._stream = None
        self._reply_text = ""
        self._reply_id: int | None = None
        self._saved_at = 0.0
        self._summariser = None  # the summary being written, so Esc can stop all of it
        self._ctx_used: int | None = None  # tokens this conversation fills; None: count it
        self._count_timer = None
        self.bubbles: dict[int, object] = {}  # message id -> its widget on screen
        self.rendered = None  # awaited: the open chat is all on screen (render_messages)
        self._agreed: tuple[int, str] | None = None  # (chat, server) the user let it go to

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            with Vertical(id="sidebar"):
                yield Label("Chats (Ctrl+N new)")
                yield ListView(id="conversations")
            with Vertical():
                yield ChatView(id="messages")
                yield ChatInput(id="input")
        yield Readouts(id="readouts")
        yield Footer()

    @property
    def session(self):
        """The app's model session (tui/session.py): the engine, the llama thread."""
        return self.app.session

    def on_mount(self) -> None:
        if self.app.size.width >= 100:
            self.query_one("#sidebar").add_class("shown")
        box = self.query_one(ChatInput)
        box.focus()
        box.waiting = self.app.model_state.loading
        self.set_interval(1.0, self.refresh_readouts)
        self.refresh_readouts()
        self.open_latest(say=True)
        self.watch(self.app, "model_state", self._model_changed, init=False)

    def _model_changed(self, state) -> None:
        """A model is loading, in use, or failed to load: the box, readouts and greeting
        follow, and the open chat's KV cache comes back for the new model."""
        box = self.query_one(ChatInput)
        box.waiting = state.loading
        if not state.loading:
            self._typed_settled()  # what was typed while it loaded: its size in tokens
        if self.is_current and not state.loading:
            box.focus()
        self._ctx_used = None
        self.refresh_readouts()
        for note in self.query(".note"):
            note.update(state.greeting())
        if self.conversation is not None:
            # A server now: a chat written here is not sent to it; where text goes is said.
            if not self.keep_chats_here():
                self.say_where()
            self.session.conversation_opened(self.conversation.id)

    # -- readouts -------------------------------------------------------------------------

    def refresh_readouts(self) -> None:
        readouts, engine = self.query_one(Readouts), self.session.engine
        remote = engine is not None and not engine.is_local  # its memory is the server's
        readouts.show_memory(self.session.readouts(), remote)
        if engine is None:
            return
        if self.generating:
            readouts.show_context(engine.n_ctx_used, engine.n_ctx)  # moves as it streams
            return
        if self._ctx_used is None and self.conversation is not None:
            chat = self.chat_messages()
            self._ctx_used = len(engine.prompt_tokens(chat)) if len(chat) > 1 else 0
        readouts.show_context(self._ctx_used or 0, engine.n_ctx)

    @on(TextArea.Changed, "#input")
    def _typed(self) -> None:
        """Once typing pauses: the draft is kept on disk, and its size in tokens shown
        under the box."""
        if self._count_timer is not None:
            self._count_timer.stop()
        self._count_timer = self.set_timer(TYPED_SETTLE_S, self._typed_settled)

    def _typed_settled(self) -> None:
        box = self.query_one(ChatInput)
        self.save_draft()
        engine = self.session.engine
        text = box.text.strip()
        if box.waiting:  # its subtitle says the model is loading, until it has
            return
        if engine is None or not text:
            box.border_subtitle = ""
            return
        n = len(engine.tokenize(text, add_special=False))
        box.border_subtitle = f"{n} token{'s' if n != 1 else ''}"

    # -- conversations --------------------------------------------------------------------

    def render_messages(self) -> None:
        """Show the open conversation; ``rendered``, awaited, has all of it on screen (a
        Markdown bubble parses its text after it is mounted)."""
        messages = self.query_one("#messages", VerticalScroll)
        messages.remove_children()
        self.bubbles = {}
        stored = self.app.store.messages(self.conversation.id)
        widgets = []
        for m in stored:
            if m.role in ("user", "assistant"):
                widgets.append(self._bubble(m.role, m.content, m.id))
                if m.role == "assistant" and not m.complete:
                    widgets[-1].add_class("stopped")
                    widgets.append(Label(UNFINISHED[None], classes="unfinished"))
        if not stored:
            widgets.append(Label(self.app.model_state.greeting(), classes="note"))
        self.rendered = messages.mount_all(widgets)
        self.say_where()
        messages.scroll_end(animate=False)

    def _bubble(self, role: str, text: str, message_id: int | None = None):
        if role == "user":
            widget = UserText(text, classes="message user")
        else:
            widget = Markdown(text, classes="message assistant")
        if message_id is not None:
            self.bubbles[message_id] = widget
        return widget

    @on(ListView.Selected, "#conversations")
    def _picked(self, event: ListView.Selected) -> None:
        if not self.generating and event.item.name:
            self.open_conversation(int(event.item.name))
            self.query_one(ChatInput).focus()

    # -- sending and streaming ------------------------------------------------------------

    def _can_reply(self) -> bool:
        if self.session.engine is None:
            if self.session.state.loading:
                self.notify(
                    "the model is still loading: your message stays in the box", severity="warning"
                )
            else:
                self.notify("no model is loaded yet", severity="warning")
            return False
        if self.generating:
            self.notify("a reply is still being written: Esc stops it", severity="warning")
            return False
        if self.session.state.refusal:
            self.notify(self.session.state.refusal, severity="error", timeout=15)
            return False
        return True

    @on(ChatInput.Send)
    async def _send(self, event: ChatInput.Send) -> None:
        if not self._can_reply():
            box = self.query_one(ChatInput)
            if not box.text:
                box.text = event.text  # nothing typed is lost
            return
        if not self.may_send_here():  # a server, and this chat was written elsewhere
            box = self.query_one(ChatInput)
            if not box.text:
                box.text = event.text
            self.ask_before_sending(event.text)
            return
        try:  # another process may hold the database: the typed text must survive that
            message_id = self.add_user_message(event.text)
        except StoreError as e:
            self.query_one(ChatInput).text = event.text
            self.notify(
                f"{_markup_safe(e)}. Your message is back in the box: Enter sends it again",
                severity="error",
                timeout=10,
            )
            return
        messages = self.query_one("#messages", VerticalScroll)
        for note in messages.query(".note"):
            await note.remove()
        for hit in messages.query(".hit"):
            hit.remove_class("hit")
        await messages.mount(self._bubble("user", event.text, message_id))
        await self.start_reply()

    async def start_reply(self, partial_id: int | None = None) -> None:
        """Stream a reply to the conversation; with ``partial_id``, more of that reply."""
        store, conv = self.app.store, self.conversation
        messages = self.query_one("#messages", VerticalScroll)
        if partial_id is None:
            try:
                self._reply_id = store.add_message(
                    conv.id, "assistant", "", complete=False, model=self.session.label or ""
                )
            except StoreError as e:
                self.notify(f"{_markup_safe(e)}; no reply was started", severity="error")
                return
            bubble = self._bubble("assistant", "", self._reply_id)
            await messages.mount(bubble)
            self._reply_text = ""
            chat, partial = self.chat_messages(upto=self._reply_id), None
        else:
            bubble = self.bubbles[partial_id]
            for note in messages.query(".unfinished"):
                await note.remove()
            bubble.remove_class("stopped")
            self._reply_id = partial_id
            self._reply_text = next(
                m.content for m in store.messages(conv.id) if m.id == partial_id
            )
            chat, partial = self.chat_messages(upto=partial_id), self._reply_text
        messages.scroll_end(animate=False)  # the reply is followed, even if scrolled away
        self._stream = Markdown.get_stream(bubble)
        self._saved_at = time.monotonic()
        sampling = replace(self.app.sampling, **conv.sampling)
        self.generating = True
        self.sent_to_engine()
        self._generate(conv.id, chat, partial, sampling)

    def watch_generating(self, generating: bool) -> None:
        # While a reply streams, the UI keeps still: a blinking cursor is a redraw too.
        for box in self.query(ChatInput):
            box.cursor_blink = not generating

    @work(thread=True, exclusive=True, group="reply")
    def _generate(self, conv_id: int, chat: list[dict], partial: str | None, sampling) -> None:
        """Wait for the reply on the llama thread; its text comes as Token messages."""
        self.session.reply(conv_id, chat, partial, sampling, self.post_message).result()

    async def on_token(self, message: Token) -> None:
        self._reply_text += message.text
        if self._stream is not None:
            await self._stream.write(message.text)
        if time.monotonic() - self._saved_at >= SAVE_EVERY_S:
            self._save_reply(complete=False, retry=False)
            self._saved_at = time.monotonic()

    def _save_reply(
        self, complete: bool, retry: bool, tries: int = 0, stats: dict | None = None
    ) -> None:
        """Write the reply (with what it cost, once it ends); when another process holds
        the database, try again shortly."""
        reply_id, text = self._reply_id, self._reply_text
        try:
            self.app.store.update_message(reply_id, text, complete, stats)
        except StoreError as e:
            if not retry:
                return  # the next save, a second later, carries this text too
            if tries >= 30:
                self.notify(f"{_markup_safe(e)}; the reply could not be saved", severity="error")
                return

            def again() -> None:
                if self._reply_id == reply_id:
                    self._save_reply(complete, True, tries + 1, stats)
                else:  # a new reply started: save this one's final text directly
                    with contextlib.suppress(StoreError):
                        self.app.store.update_message(reply_id, text, complete, stats)

            self.set_timer(2.0, again)

    async def on_finished(self, message: Finished) -> None:
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        store, messages = self.app.store, self.query_one("#messages", VerticalScroll)
        finish = message.stats.finish if message.stats is not None else "error"
        if not self._reply_text:  # nothing came (an error): no empty reply is kept
            with contextlib.suppress(StoreError):  # locked: an empty reply stays, harmless
                store.delete_messages_from(self.conversation.id, self._reply_id)
            bubble = self.bubbles.pop(self._reply_id, None)
            if bubble is not None:
                await bubble.remove()
        else:
            complete = finish == "stop"
            stats = message.stats.as_dict() if message.stats is not None else None
            self._save_reply(complete=complete, retry=True, stats=stats)
            if not complete:
                self.bubbles[self._reply_id].add_class("stopped")
                why = UNFINISHED.get(finish, UNFINISHED[None])
                await messages.mount(Label(why, classes="unfinished"))
        self.generating = False
        if finish == "cancelled":
            self.notify("stopped; the partial reply is kept")
        if message.error:
            await messages.mount(Label(_markup_safe(message.error), classes="note"))
            self.notify(_markup_safe(message.error), severity="error")
        if message.dropped:
            self.notify(f"{message.dropped} old message(s) left the context window")
        if message.stats is not None:
            readouts = self.query_one(Readouts)
            self._show_speed(readouts, message.stats)
            self._ctx_used = message.stats.n_ctx_used
            readouts.show_context(message.stats.n_ctx_used, message.stats.n_ctx)
        self.keep_chats_here()  # a server loaded while this reply was written here

    def action_stop(self) -> None:
        if self._summariser is not None:
            self._summariser.cancel()  # the whole summary, not only the chunk being read
        elif self.generating:
            self.session.cancel()
