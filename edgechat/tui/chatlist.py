"""The chat screen's list of conversations: which one is open, the sidebar, new chats.
A mixin of ChatScreen.

Each window holds the conversation it shows (``Store.claims``): a second window on the
same home never opens, reuses or deletes the first one's chat, so nothing one window
writes lands in the other's conversation.
"""

from __future__ import annotations

from textual.widgets import Label, ListItem, ListView

from edgechat.tasks.conversations import prompt


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
        if conversation_id is None:
            conv = store.new_chat(self.app.settings.system_prompt, self.session.label or "")
        elif not store.claims.take(conversation_id):
            self.notify("that chat is open in another edgechat window", severity="warning")
            return False
        else:
            conv = store.get(conversation_id)
        if previous is not None and previous.id != conv.id:
            if not store.messages(previous.id):
                store.delete(previous.id)  # nothing was said in it: nothing to keep
            else:
                store.claims.drop(previous.id)
        self.conversation = conv
        self._ctx_used = None
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
