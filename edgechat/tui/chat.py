"""The chat screen: conversations, streamed Markdown replies, input with history, readouts."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import replace

from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import (
    Footer,
    Header,
    Label,
    ListItem,
    ListView,
    Markdown,
    ProgressBar,
    Sparkline,
    TextArea,
)


def _batch_seconds() -> float:
    """How often streamed text reaches the screen. With few cores every redraw is taken
    from llama.cpp's threads (measured on two cores: 4 redraws a second cost ~12 % of
    generation speed, 2 a second ~2 %); with cores to spare, redraw often."""
    from edgechat.planning.plan import physical_cores

    return 0.5 if physical_cores() <= 2 else 0.1


UI_BATCH_S = _batch_seconds()


class ChatInput(TextArea):
    """Enter sends; Ctrl+J (or Shift+Enter where the terminal reports it) adds a line;
    Up on the first line walks back through what was sent."""

    class Send(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, **kwargs) -> None:
        super().__init__(soft_wrap=True, show_line_numbers=False, **kwargs)
        self.sent: list[str] = []
        self._back = 0

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.prevent_default()
            event.stop()
            text = self.text.strip()
            if text:
                self.sent.append(text)
                self._back = 0
                self.clear()
                self.post_message(self.Send(text))
            return
        if event.key in ("shift+enter", "ctrl+j"):
            event.prevent_default()
            event.stop()
            self.insert("\n")
            return
        if event.key == "up" and self.cursor_location[0] == 0 and self.sent:
            event.prevent_default()
            event.stop()
            self._back = min(self._back + 1, len(self.sent))
            self.text = self.sent[-self._back]
            self.move_cursor(self.document.end)
            return
        if event.key == "down" and self._back and self.cursor_at_last_line:
            event.prevent_default()
            event.stop()
            self._back -= 1
            self.text = self.sent[-self._back] if self._back else ""
            self.move_cursor(self.document.end)
            return
        await super()._on_key(event)


class Readouts(Horizontal):
    """Memory, context and speed, refreshed every second."""

    def compose(self) -> ComposeResult:
        yield Label("RSS -", id="rss")
        yield Sparkline([0], id="rss-spark")
        yield Label("RAM -", id="ram")
        yield Label("", id="vram")
        yield Label("ctx", id="ctx")
        yield ProgressBar(total=1, show_eta=False, show_percentage=False, id="ctx-bar")
        yield Label("", id="speed")

    def show_memory(self, r, history) -> None:
        self.query_one("#rss", Label).update(f"RSS {_short(r.rss)}")
        self.query_one("#rss-spark", Sparkline).data = list(history)
        self.query_one("#ram", Label).update(f"RAM {_short(r.ram_used)}/{_short(r.ram_total)}")
        if r.vram_total:
            vram = self.query_one("#vram", Label)
            vram.update(vram_text(r))
            vram.tooltip = f"whole GPU: {_short(r.vram_used)} used of {_short(r.vram_total)}"
            vram.add_class("shown")

    def show_context(self, used: int, size: int) -> None:
        self.query_one("#ctx", Label).update(f"ctx {used}/{size}")
        self.query_one("#ctx-bar", ProgressBar).update(total=max(1, size), progress=used)

    def show_speed(self, stats) -> None:
        self.query_one("#speed", Label).update(f"{stats.gen_tps:.0f} tok/s {stats.ttft_s:.1f}s")


def vram_text(r) -> str:
    """This process's VRAM beside the GPU's total (the whole GPU's use when the driver
    does not say per process)."""
    mine = r.vram_process if r.vram_process is not None else r.vram_used
    return f"VRAM {_short(mine)}/{_short(r.vram_total)}"


def _short(n: int | None) -> str:
    """Sizes in a few characters: the readout line must fit 80 columns."""
    if n is None:
        return "?"
    return f"{n / 2**30:.1f}G" if n >= 2**30 else f"{n / 2**20:.0f}M"


class Token(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class Finished(Message):
    def __init__(self, stats, dropped: int, error: str | None = None) -> None:
        super().__init__()
        self.stats, self.dropped, self.error = stats, dropped, error


class ChatScreen(Screen):
    BINDINGS = [
        Binding("escape", "stop", "Stop reply"),
        Binding("ctrl+n", "new_conversation", "New chat"),
        Binding("ctrl+b", "toggle_sidebar", "Chats"),
        Binding("ctrl+e", "export", "Export"),
        Binding("ctrl+y", "copy_reply", "Copy reply"),
        Binding("ctrl+o", "settings", "Settings"),
        Binding("f2", "rename", "Rename", show=False),
        Binding("ctrl+d", "delete", "Delete chat", show=False),
        Binding("ctrl+p", "command_palette", "Commands"),
    ]
    generating = reactive(False)

    def __init__(self) -> None:
        super().__init__()
        self.conversation = None
        self._stream = None
        self._reply_text = ""
        self._reply_id: int | None = None
        self._saved_at = 0.0
        self._rss: deque[float] = deque(maxlen=30)

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            with Vertical(id="sidebar"):
                yield Label("Chats (Ctrl+N new)")
                yield ListView(id="conversations")
            with Vertical():
                yield VerticalScroll(id="messages")
                yield ChatInput(id="input")
        yield Readouts(id="readouts")
        yield Footer()

    def on_mount(self) -> None:
        if self.app.size.width >= 100:
            self.query_one("#sidebar").add_class("shown")
        self.query_one(ChatInput).focus()
        self.query_one(ChatInput).loading = self.app.engine is None
        self.set_interval(1.0, self.refresh_readouts)
        self.refresh_readouts()
        conversations = self.app.store.list()
        self.open_conversation(conversations[0].id if conversations else None)

    # -- readouts -------------------------------------------------------------------------

    def refresh_readouts(self) -> None:
        r = self.app.sample_readouts()
        if not self._rss:  # start level, not from zero
            self._rss.extend([r.rss / 2**20] * 29)
        self._rss.append(r.rss / 2**20)
        self.query_one(Readouts).show_memory(r, self._rss)
        engine = self.app.engine
        if getattr(engine, "remote", False):  # the model's memory is on the server
            self.query_one("#rss", Label).update(f"remote · app {_short(r.rss)}")
        if engine is not None and not self.generating:
            used = engine.n_ctx_used
            self.query_one(Readouts).show_context(used, engine.n_ctx)

    # -- conversations --------------------------------------------------------------------

    def refresh_sidebar(self) -> None:
        view = self.query_one("#conversations", ListView)
        view.clear()
        for conv in self.app.store.list():
            item = ListItem(Label(conv.title[:40]), name=str(conv.id))
            view.append(item)

    def open_conversation(self, conversation_id: int | None) -> None:
        store = self.app.store
        if conversation_id is None:
            conv = store.create(system=self.app.settings.system_prompt)
        else:
            conv = store.get(conversation_id)
        self.conversation = conv
        messages = self.query_one("#messages", VerticalScroll)
        messages.remove_children()
        for m in store.messages(conv.id):
            if m.role in ("user", "assistant"):
                messages.mount(self._bubble(m.role, m.content, stopped=not m.complete))
        if not store.messages(conv.id):
            messages.mount(Label(self.app.greeting(), classes="note"))
        messages.scroll_end(animate=False)
        self.refresh_sidebar()
        self.sub_title = conv.title

    def _bubble(self, role: str, text: str, stopped: bool = False) -> Markdown:
        classes = f"message {role}" + (" stopped" if stopped else "")
        return Markdown(text, classes=classes)

    @on(ListView.Selected, "#conversations")
    def _picked(self, event: ListView.Selected) -> None:
        if not self.generating and event.item.name:
            self.open_conversation(int(event.item.name))
            self.query_one(ChatInput).focus()

    def action_new_conversation(self) -> None:
        if not self.generating:
            self.open_conversation(None)
            self.query_one(ChatInput).focus()

    def action_toggle_sidebar(self) -> None:
        self.query_one("#sidebar").toggle_class("shown")

    def action_rename(self) -> None:
        from edgechat.tui.dialogs import Ask

        def done(title: str | None) -> None:
            if title and title.strip():
                self.app.store.rename(self.conversation.id, title.strip())
                self.conversation.title = title.strip()
                self.sub_title = title.strip()
                self.refresh_sidebar()

        self.app.push_screen(Ask("Rename this chat", self.conversation.title), done)

    def action_delete(self) -> None:
        if self.generating:
            return
        self.app.store.delete(self.conversation.id)
        self.notify(f"deleted “{self.conversation.title}”")
        rest = self.app.store.list()
        self.open_conversation(rest[0].id if rest else None)

    def action_export(self) -> None:
        from edgechat.paths import paths, write_atomic
        from edgechat.tui.dialogs import Ask

        conv = self.conversation
        safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in conv.title.lower())[:40]
        default = paths().data_dir / "exports" / f"{safe or 'chat'}-{conv.id}.md"

        def done(path: str | None) -> None:
            if path:
                from pathlib import Path

                from edgechat.errors import EdgechatError

                target = Path(path).expanduser()
                try:
                    write_atomic(target, self.app.store.export_markdown(conv.id))
                except EdgechatError as e:
                    self.notify(str(e), severity="error", timeout=10)
                    return
                self.notify(f"exported to {target}")

        self.app.push_screen(Ask("Export this chat as Markdown to", str(default)), done)

    def action_settings(self) -> None:
        from edgechat.tui.dialogs import Settings

        conv = self.conversation

        def done(result) -> None:
            if result:
                system, sampling = result
                self.app.store.configure(conv.id, system, sampling)
                conv.system, conv.sampling = system, sampling
                self.notify("settings saved for this chat")

        self.app.push_screen(Settings(conv.system, conv.sampling), done)

    def action_summarise_file(self) -> None:
        from edgechat.tui.dialogs import Ask

        def done(path: str | None) -> None:
            if path and path.strip():
                self._summarise(path.strip())

        self.app.push_screen(Ask("Summarise which file? (text, Markdown, HTML, PDF, DOCX)"), done)

    def _summarise(self, path: str) -> None:
        from edgechat.errors import EdgechatError
        from edgechat.tasks import documents

        if self.app.engine is None or self.generating:
            self.notify("wait for the model, or for the reply to finish", severity="warning")
            return
        try:
            doc = documents.open_document(path)
        except EdgechatError as e:
            self.notify(str(e), severity="error", timeout=10)
            return
        self.generating = True
        self.app.store.add_message(self.conversation.id, "user", f"Summarise {doc.name}")
        self._run_summary(doc)

    @work(thread=True, exclusive=True, group="reply")
    def _run_summary(self, doc) -> None:
        from edgechat.errors import EdgechatError
        from edgechat.tasks.summarise import Summariser

        def progress(p) -> None:
            total = f"/{p.total}" if p.total else ""
            eta = f", about {p.eta_s:.0f} s left" if p.eta_s else ""
            self.app.call_from_thread(self._summary_progress, f"{p.stage}: {p.done}{total}{eta}")

        try:
            summariser = Summariser(self.app.engine, progress=progress)
            result = self.app.llama.submit(summariser.run, doc.paragraphs, doc.size).result()
            text = (
                f"{result.text}\n\n_{result.chunks} chunk(s), {result.tokens_in} tokens in, "
                f"{result.seconds:.0f} s_"
            )
            self.app.call_from_thread(self._summary_done, doc.name, text, None)
        except EdgechatError as e:
            self.app.call_from_thread(self._summary_done, doc.name, None, str(e))

    def _summary_progress(self, line: str) -> None:
        self.notify(line, timeout=2)

    async def _summary_done(self, name: str, text: str | None, error: str | None) -> None:
        messages = self.query_one("#messages", VerticalScroll)
        if error:
            self.notify(error, severity="error", timeout=10)
        else:
            await messages.mount(self._bubble("user", f"Summarise {name}"))
            await messages.mount(self._bubble("assistant", text))
            self.app.store.add_message(self.conversation.id, "assistant", text)
            messages.scroll_end(animate=False)
        self.generating = False

    def action_copy_reply(self) -> None:
        replies = [
            m for m in self.app.store.messages(self.conversation.id) if m.role == "assistant"
        ]
        if replies:
            self.app.copy_to_clipboard(replies[-1].content)
            self.notify("copied the last reply")

    # -- sending and streaming ------------------------------------------------------------

    @on(ChatInput.Send)
    async def _send(self, event: ChatInput.Send) -> None:
        if self.app.engine is None:
            self.notify("the model is still loading", severity="warning")
            return
        if self.generating:
            self.notify("a reply is still being written: Esc stops it", severity="warning")
            return
        store, conv = self.app.store, self.conversation
        history = store.messages(conv.id)
        if not history and conv.title == "New chat":
            conv.title = event.text.splitlines()[0][:40]
            store.rename(conv.id, conv.title)
            self.sub_title = conv.title
            self.refresh_sidebar()
        store.add_message(conv.id, "user", event.text)
        messages = self.query_one("#messages", VerticalScroll)
        for note in messages.query(".note"):
            await note.remove()
        await messages.mount(self._bubble("user", event.text))
        bubble = self._bubble("assistant", "")
        await messages.mount(bubble)
        messages.scroll_end(animate=False)
        self._stream = Markdown.get_stream(bubble)
        self._reply_text = ""
        self._reply_id = store.add_message(conv.id, "assistant", "", complete=False)
        self._saved_at = time.monotonic()
        chat = [{"role": "system", "content": conv.system}] if conv.system else []
        chat += [
            {"role": m.role, "content": m.content}
            for m in store.messages(conv.id)
            if m.role in ("user", "assistant") and m.id != self._reply_id
        ]
        sampling = replace(self.app.sampling, **conv.sampling)
        self.generating = True
        self._generate(chat, sampling)

    def watch_generating(self, generating: bool) -> None:
        # While a reply streams, the UI keeps still: a blinking cursor is a redraw too.
        for box in self.query(ChatInput):
            box.cursor_blink = not generating

    @work(thread=True, exclusive=True, group="reply")
    def _generate(self, chat: list[dict], sampling) -> None:
        self.app.llama.submit(self._stream_reply, chat, sampling).result()

    def _stream_reply(self, chat: list[dict], sampling) -> None:
        """On the llama thread: generate, handing text to the screen in batches."""
        from edgechat.errors import EdgechatError

        try:
            reply = self.app.engine.chat(chat, sampling)
            # In batches (UI_BATCH_S): rendering each token would take CPU from llama.cpp.
            pending, sent_at = [], 0.0
            for piece in reply:
                pending.append(piece)
                now = time.monotonic()
                if now - sent_at >= UI_BATCH_S:
                    self.post_message(Token("".join(pending)))
                    pending, sent_at = [], now
            if pending:
                self.post_message(Token("".join(pending)))
            self.post_message(Finished(reply.stats, reply.dropped))
        except EdgechatError as e:
            self.post_message(Finished(None, 0, str(e)))

    async def on_token(self, message: Token) -> None:
        self._reply_text += message.text
        if self._stream is not None:
            await self._stream.write(message.text)
        if time.monotonic() - self._saved_at >= 1.0:  # a killed app loses at most a second
            self.app.store.update_message(self._reply_id, self._reply_text)
            self._saved_at = time.monotonic()
        messages = self.query_one("#messages", VerticalScroll)
        if messages.max_scroll_y - messages.scroll_y < 3:
            messages.scroll_end(animate=False)

    async def on_finished(self, message: Finished) -> None:
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        stopped = message.stats is not None and message.stats.finish == "cancelled"
        self.app.store.update_message(self._reply_id, self._reply_text, complete=not stopped)
        self.generating = False
        messages = self.query_one("#messages", VerticalScroll)
        if stopped:
            messages.children[-1].add_class("stopped")
            self.notify("stopped; the partial reply is kept")
        if message.error:
            await messages.mount(Label(message.error, classes="note"))
            self.notify(message.error, severity="error")
        if message.dropped:
            self.notify(f"{message.dropped} old message(s) left the context window")
        if message.stats is not None:
            readouts = self.query_one(Readouts)
            readouts.show_speed(message.stats)
            readouts.show_context(message.stats.n_ctx_used, message.stats.n_ctx)
        messages.scroll_end(animate=False)

    def action_stop(self) -> None:
        if self.generating and self.app.engine is not None:
            self.app.engine.cancel()
