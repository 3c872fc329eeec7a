"""What the chat screen does besides chatting: rename, delete, export, copy, search,
settings, regenerate, edit, continue and summarise. A mixin of ChatScreen."""

from __future__ import annotations

import os
from pathlib import Path

from textual import work
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, ProgressBar

from edgechat.errors import EdgechatError


def code_blocks(markdown: str) -> list[str]:
    """The fenced and indented code blocks of a reply, in order (markdown-it parses them,
    as the screen renders them)."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").parse(markdown)
    return [t.content for t in tokens if t.type in ("fence", "code_block") and t.content.strip()]


def _matching_block(bubble, snippet: str):
    """The first block of a reply (a paragraph, a list, ...) holding the search's match
    (the snippet's first [word]); None for a message of one block, or no match."""
    import re

    found = re.search(r"\[([^\]]+)\]", snippet)
    lines = getattr(bubble, "source", "").splitlines()
    if found is None or len(bubble.children) < 2:
        return None
    word = found.group(1).lower()
    for block in bubble.children:
        start, end = getattr(block, "source_range", (0, 0))
        if word in "\n".join(lines[start:end]).lower():
            return block
    return None


def _free_name(folder: Path, stem: str) -> Path:
    """``stem.md`` in ``folder``, numbered when that name is taken: never overwrite."""
    target = folder / f"{stem}.md"
    n = 2
    while target.exists():
        target = folder / f"{stem}-{n}.md"
        n += 1
    return target


class ChatActions:
    def _show_speed(self, readouts, stats) -> None:
        """A reply's speed and threads in the readouts; once per loaded model, a reply far
        below the speed estimate suggests fewer threads (other programs hold the cores)."""
        from edgechat.planning.threads import slow_hint

        engine = self.app.engine
        threads = getattr(engine, "threads", None)
        readouts.show_speed(stats, threads.why if threads else "")
        if engine is None or getattr(self, "_hinted_engine", None) is engine:
            return
        expected = getattr(engine, "expected_tps", None)
        hint = slow_hint(stats.gen_tps, stats.gen_tokens, expected, stats.threads)
        if hint:
            self._hinted_engine = engine
            self.notify(
                f"{hint[0]}; try `edgechat config set threads {hint[1]}` and reload the model",
                severity="warning",
                timeout=15,
            )

    # -- the conversation -----------------------------------------------------------------

    @work
    async def action_rename(self) -> None:
        from edgechat.tui.dialogs import Ask

        title = await self.app.push_screen_wait(Ask("Rename this chat", self.conversation.title))
        if title and title.strip():
            self.app.store.rename(self.conversation.id, title.strip())
            self.conversation.title = title.strip()
            self.sub_title = title.strip()
            self.refresh_sidebar()

    @work
    async def action_delete(self) -> None:
        """Delete the conversation, after asking: there is no undo."""
        from edgechat.tui.dialogs import Confirm

        if self.generating:
            return
        conv = self.conversation
        n = len(self.app.store.messages(conv.id))
        question = f"Delete “{conv.title}” and its {n} message(s)? This cannot be undone."
        if not await self.app.push_screen_wait(Confirm(question, "Delete")):
            return
        self.app.store.delete(conv.id)
        self.session.drop_snapshot(conv.id)
        self.conversation = None
        self.notify(f"deleted “{conv.title}”")
        self.open_latest()

    def action_export(self) -> None:
        """Ask where, offering the current folder, and write Markdown there."""
        from edgechat.paths import output_path, write_atomic
        from edgechat.tui.dialogs import Ask

        conv = self.conversation
        safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in conv.title.lower())
        default = _free_name(Path.cwd(), safe.strip("-")[:40] or f"chat-{conv.id}")

        def done(path: str | None) -> None:
            if not path or not path.strip():
                return
            target = Path(path.strip()).expanduser()
            if os.path.isdir(target):  # never raises (a name too long, a loop)
                target = _free_name(target, default.stem)
            try:
                target = output_path(target, replace_hint="give another name")
                write_atomic(target, self.app.store.export_markdown(conv.id))
            except EdgechatError as e:
                self.notify(str(e), severity="error", timeout=10)
                return
            self.notify(f"exported to {target}")

        # Shown at once, not awaited in a worker: the dialog is there when this returns.
        self.app.push_screen(Ask("Export this chat as Markdown to", str(default)), done)

    @work
    async def action_settings(self) -> None:
        from edgechat.tui.dialogs import Settings

        conv = self.conversation
        defaults = {k: getattr(self.app.sampling, k) for k in Settings.FIELDS}
        result = await self.app.push_screen_wait(Settings(conv.system, conv.sampling, defaults))
        if result:
            system, sampling = result
            self.app.store.configure(conv.id, system, sampling)
            conv.system, conv.sampling = system, sampling
            self._ctx_used = None
            self.notify("settings saved for this chat")

    @work
    async def action_search(self) -> None:
        from edgechat.tui.dialogs import Search

        hit = await self.app.push_screen_wait(Search(self.app.store))
        self.query_one("#input").focus()  # the box keeps the keys, as everywhere here
        if hit is None or self.generating:
            return
        if self.conversation.id != hit.conversation:
            if not self.open_conversation(hit.conversation):
                return  # open in another window, and said so
            await self.rendered  # every bubble holds its text: the heights are known
        for other in self.query(".hit"):
            other.remove_class("hit")
        widget = self.bubbles.get(hit.message)
        if widget is not None:  # the matching message marked, its match at the top
            widget.add_class("hit")
            target = _matching_block(widget, hit.snippet) or widget
            messages = self.query_one("#messages", VerticalScroll)
            self.call_after_refresh(messages.scroll_to_widget, target, animate=False, top=True)

    # -- replies --------------------------------------------------------------------------

    def _last(self, role: str):
        found = [m for m in self.app.store.messages(self.conversation.id) if m.role == role]
        return found[-1] if found else None

    def action_copy_reply(self) -> None:
        reply = self._last("assistant")
        if reply is None:
            self.notify("no reply to copy yet", severity="warning")
            return
        self.app.copy_to_clipboard(reply.content)
        self.notify("copied the last reply")

    @work
    async def action_copy_code(self) -> None:
        """Copy one code block of the last reply; with several, ask which."""
        from edgechat.tui.dialogs import Pick

        reply = self._last("assistant")
        blocks = code_blocks(reply.content) if reply else []
        if not blocks:
            self.notify("the last reply has no code block", severity="warning")
            return
        i = 0
        if len(blocks) > 1:
            labels = [f"{i + 1}: {b.strip().splitlines()[0][:60]}" for i, b in enumerate(blocks)]
            i = await self.app.push_screen_wait(Pick("Copy which code block?", labels))
        if i is not None:
            self.app.copy_to_clipboard(blocks[i])
            self.notify(f"copied code block {i + 1} ({len(blocks[i].splitlines())} lines)")

    async def action_regenerate(self) -> None:
        """Write the last reply again (its old text is dropped)."""
        if not self._can_reply():
            return
        if not self.may_send_here():
            self.notify(
                f"this chat was not written with {self.where()}: sending a message in it "
                "asks whether it goes there (Ctrl+N starts a chat there)",
                severity="warning",
                markup=False,
            )
            return
        stored = self.app.store.messages(self.conversation.id)
        if not stored or stored[-1].role not in ("user", "assistant"):
            self.notify("nothing to regenerate yet", severity="warning")
            return
        if stored[-1].role == "assistant":
            self.app.store.delete_messages_from(self.conversation.id, stored[-1].id)
        self.render_messages()
        await self.start_reply()

    def action_edit_last(self) -> None:
        """Take the last message back into the box to edit and send again; the reply to
        it goes."""
        from edgechat.tui.widgets import ChatInput

        if self.generating:
            return
        last = self._last("user")
        if last is None:
            self.notify("no message to edit yet", severity="warning")
            return
        if self.query_one(ChatInput).text.strip():  # the draft would be replaced: never
            self.notify("the box holds a message not sent yet: send or clear it first")
            return
        self.app.store.delete_messages_from(self.conversation.id, last.id)
        self._ctx_used = None
        self.render_messages()
        box = self.query_one(ChatInput)
        box.text = last.content
        box.move_cursor(box.document.end)
        box.focus()
        self.save_draft()  # out of the chat, into the draft: on disk at once
        self.notify("edit the message, then Enter sends it again")

    async def action_continue_reply(self) -> None:
        """Write more of a reply that was stopped or cut at the length limit."""
        stored = self.app.store.messages(self.conversation.id)
        if not stored or stored[-1].role != "assistant" or stored[-1].complete:
            self.notify("the last reply is complete: nothing to continue", severity="warning")
            return
        if not self.session.engine.is_local:
            self.notify("a remote server cannot continue a reply; Ctrl+R writes it again")
            return
        if self._can_reply():
            await self.start_reply(partial_id=stored[-1].id)

    # -- summarising a file ---------------------------------------------------------------

    @work
    async def action_summarise_file(self) -> None:
        from edgechat.tui.dialogs import Ask

        question = "Summarise which file? (text, Markdown, HTML, PDF, DOCX)"
        path = await self.app.push_screen_wait(Ask(question))
        if path and path.strip():
            self._summarise(path.strip())

    def _summarise(self, path: str) -> None:
        from edgechat.tasks import documents

        if self.session.engine is None or self.generating:
            self.notify("wait for the model, or for the reply to finish", severity="warning")
            return
        try:
            doc = documents.open_document(path, warn=self._summary_warning)
        except EdgechatError as e:
            self.notify(str(e), severity="error", timeout=10)
            return
        self.generating = True
        self.add_user_message(f"Summarise {doc.name}", title=f"Summary of {Path(doc.name).name}")
        progress = Vertical(
            Label(f"reading {doc.name} ...", id="summary-stage"),
            ProgressBar(total=100, show_eta=False, id="summary-bar"),  # the ETA: the label's
            id="summary-progress",
        )
        messages = self.query_one("#messages", VerticalScroll)
        messages.mount(progress)
        messages.scroll_end(animate=False)  # the bar is followed, as a reply is
        if self.may_send_here():  # the file goes to the model, not the chat before it
            self.sent_to_engine()
        self._run_summary(doc)

    @work(thread=True, exclusive=True, group="reply")
    def _run_summary(self, doc) -> None:
        from edgechat.tasks.progress import clock
        from edgechat.tasks.summarise import Summariser

        def progress(p) -> None:
            self.app.call_from_thread(self._summary_progress, p)

        try:
            self._summariser = summariser = Summariser(self.session.engine, progress=progress)
            result = self.session.run(summariser.run, doc.paragraphs, doc.size).result()
            text = (
                f"{result.text}\n\n_{result.chunks} chunk(s), {result.tokens_in} tokens in, "
                f"{clock(result.seconds)}_"
            )
            checked = result.check.line() if result.check else None
            if checked:  # what the check against the document took out, marked
                text += f"\n\n_⚠ checked against the document: {checked}_"
                self.app.call_from_thread(self.notify, checked, severity="warning", timeout=10)
            self.app.call_from_thread(self._summary_done, doc.name, text, None)
        except EdgechatError as e:
            self.app.call_from_thread(self._summary_done, doc.name, None, str(e))
        finally:
            doc.close()

    def _summary_warning(self, line: str) -> None:
        """From the llama thread, while the document is read (a skipped PDF page)."""
        self.app.call_from_thread(self.notify, line, severity="warning", timeout=10)

    def _summary_progress(self, p) -> None:
        """The summary's one progress model (tasks/progress.py), in the CLI's words: the
        bar fills with the stage, the label names it and the time left."""
        warning = p.warning()
        if warning:
            self.notify(f"{warning}; Esc stops it", severity="warning", timeout=20)
        for bar in self.query("#summary-bar").results(ProgressBar):
            bar.update(total=100, progress=round(100 * (p.bar or 0)))
        for label in self.query("#summary-stage").results(Label):
            label.update(p.line())

    async def _summary_done(self, name: str, text: str | None, error: str | None) -> None:
        self._summariser = None
        messages = self.query_one("#messages", VerticalScroll)
        for widget in messages.query("#summary-progress"):
            await widget.remove()
        if error:
            self.notify(error, severity="error", timeout=10)
        else:
            await messages.mount(self._bubble("user", f"Summarise {name}"))
            await messages.mount(self._bubble("assistant", text))
            model = self.session.label or ""
            self.app.store.add_message(self.conversation.id, "assistant", text, model=model)
        self._ctx_used = None
        self.session.context_replaced()  # the summary's chunks, not this chat, are cached now
        self.generating = False
