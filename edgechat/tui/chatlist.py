"""The chat screen's list of conversations: which one is open, the sidebar, new chats,
each chat's unsent draft, and where a chat's text may go. A mixin of ChatScreen.

Each window holds the conversation it shows (``Store.claims``): a second window on the
same home never opens, reuses or deletes the first one's chat, so nothing one window
writes lands in the other's conversation.

A chat written on this machine is never sent to a server unasked: when a server comes
into use, a chat holding text it has not been sent gives way to a new one, and sending
in such a chat (opened from the list) asks first. Where the text goes is said before
the first message: in the greeting, above the box, and at the end of a reopened chat.
"""

from __future__ import annotations

import contextlib

from textual import work
from textual.widgets import Label, ListItem, ListView

from edgechat.tasks.conversations import prompt
from edgechat.tasks.dbopen import StoreError


class ChatList:
    def chat_messages(self, upto: int | None = None) -> list[dict]:
        """This conversation as the engine takes it (messages before id ``upto``)."""
        conv = self.conversation
        stored = self.app.store.messages(conv.id)
        return prompt(conv.system, (m for m in stored if upto is None or m.id < upto))

    def refresh_sidebar(self) -> None:
        view = self.query_one("#conversations", ListView)
        view.clear()
        for conv in self.app.store.list():
            view.append(ListItem(Label(conv.title[:40]), name=str(conv.id)))

    def open_latest(self, say: bool = False) -> None:
        """The newest conversation, unless another window has it open: then a new one."""
        store = self.app.store
        newest = next(iter(store.list()), None)
        if newest is not None and store.claims.elsewhere(newest.id):
            if say:
                self.notify("your latest chat is open in another window: this one has its own")
            newest = None
        if not self.open_conversation(newest.id if newest else None):
            self.open_conversation(None)

    def open_conversation(self, conversation_id: int | None) -> bool:
        """Show ``conversation_id`` (None: a new chat, reusing an empty one no window holds);
        False, with a word, when another window has it open."""
        store = self.app.store
        previous = self.conversation
        if previous is not None:
            self.save_draft()  # the box goes to the chat being opened
        if conversation_id is None:
            conv = store.new_chat(self.app.settings.system_prompt, self.session.label or "")
        elif not store.claims.take(conversation_id):
            self.notify("that chat is open in another edgechat window", severity="warning")
            return False
        else:
            conv = store.get(conversation_id)
        if previous is not None and previous.id != conv.id:
            if not store.messages(previous.id) and not store.get(previous.id).draft:
                store.delete(previous.id)  # nothing was said or typed in it: nothing to keep
            else:
                store.claims.drop(previous.id)
        self.conversation = conv
        self._ctx_used = None
        self.query_one("#input").restore(conv.draft)
        self.render_messages()
        self.refresh_sidebar()
        self.sub_title = conv.title
        self.refresh_readouts()
        self.session.conversation_opened(conv.id)
        return True

    def add_user_message(self, text: str, title: str | None = None) -> int:
        """Store what the user says; the first message names a new chat (the store does)."""
        conv = self.conversation
        message_id = self.app.store.add_message(conv.id, "user", text, title=title)
        self.app.store.save_draft(conv.id, "")  # sent: no longer a draft
        title = self.app.store.get(conv.id).title
        if title != conv.title:
            conv.title = self.sub_title = title
            self.refresh_sidebar()
        return message_id

    def action_new_conversation(self) -> None:
        if self.generating:
            self.notify("a reply is still being written: Esc stops it", severity="warning")
            return
        self.open_conversation(None)
        self.query_one("#input").focus()

    def action_toggle_sidebar(self) -> None:
        self.query_one("#sidebar").toggle_class("shown")

    # -- the draft ----------------------------------------------------------------------

    def save_draft(self) -> None:
        """Keep what is typed and not sent on disk with its chat (the app may be killed
        by a native fault, with no Python running after it)."""
        conv, draft = self.conversation, self.query_one("#input").draft
        if conv is None or draft == conv.draft:
            return
        try:
            self.app.store.save_draft(conv.id, draft)
        except StoreError:
            return  # another process holds the database: the next pause tries again
        conv.draft = draft

    # -- where the text goes ------------------------------------------------------------

    def where(self) -> str:
        """The server the text is sent to; '' when the model runs here."""
        engine = self.session.engine
        return "" if engine is None or engine.is_local else engine.where

    def may_send_here(self) -> bool:
        """Whether sending this chat to the model sends nothing the user has not agreed
        to: a model here, an empty chat, or one all sent to this server already."""
        where, conv = self.where(), self.conversation
        if not where or self._agreed == (conv.id, where) or conv.sent_to == where:
            return True
        return not self.app.store.messages(conv.id)

    def sent_to_engine(self) -> None:
        """The chat is on its way to the model: note where all of it has been sent."""
        conv, where = self.conversation, self.where()
        if conv.sent_to != where:
            with contextlib.suppress(StoreError):  # unsaved: the next send asks again
                self.app.store.mark_sent(conv.id, where)
            conv.sent_to = where

    def keep_chats_here(self) -> bool:
        """A server is in use: a chat holding text it was never sent gives way to a new
        chat (it stays in the list; sending in it asks first). True if it did."""
        where = self.where()
        if not where or self.generating or self.may_send_here():
            return False
        self.open_conversation(None)
        self.notify(
            f"a new chat for {where}: your chats on this machine are not sent there "
            "(sending in one asks first)",
            timeout=10,
            markup=False,
        )
        return True

    def say_where(self) -> None:
        """Above the box, and at the end of a chat that is not empty (an empty one's
        greeting says it): where what is typed goes."""
        from edgechat.text import clean

        where = clean(self.where())
        self.query_one("#input").border_title = f"sent to {where}" if where else ""
        messages = self.query_one("#messages")
        for line in messages.query(".where"):
            line.remove()
        if where and self.app.store.messages(self.conversation.id):
            line = f"From here on, what you type in this chat is sent to {where}."
            messages.mount(Label(line, classes="where", markup=False))

    @work
    async def ask_before_sending(self, text: str) -> None:
        """This chat holds text the server was never sent: send it all, start a new chat
        with the message alone, or send nothing (the message stays in the box)."""
        from edgechat.tui.dialogs import Pick
        from edgechat.tui.widgets import ChatInput

        where, conv = self.where(), self.conversation
        n = len(self.app.store.messages(conv.id))
        choices = [
            "Start a new chat with this message alone",
            f"Send it with this chat's {n} earlier message(s)",
            "Send nothing for now (the message stays in the box)",
        ]
        question = f"This chat was not written with {where}: what goes there?"
        i = await self.app.push_screen_wait(Pick(question, choices))
        if i not in (0, 1) or self.conversation is not conv or self.where() != where:
            return
        box = self.query_one(ChatInput)
        if box.text.strip() == text:
            box.clear()  # before a new chat opens, so the old chat keeps no copy as a draft
        if i == 0:
            self.open_conversation(None)
        else:
            self._agreed = (conv.id, where)  # noted in the store once it is sent
        self.post_message(ChatInput.Send(text))
