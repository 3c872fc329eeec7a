"""Small modal dialogs: a line of text, a yes/no, a pick from a list, a search, and a
conversation's settings. Each fits an 80x24 terminal, buttons included."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, TextArea
from textual.widgets.option_list import Option

from edgechat import limits
from edgechat.limits import RANDOM_SEED


class Dialog(ModalScreen):
    BINDINGS = [("escape", "dismiss_none", "Cancel")]

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


class Ask(Dialog):
    """One line of text (a title, a path); Enter accepts, Esc cancels."""

    def __init__(self, question: str, value: str = "") -> None:
        super().__init__()
        self.question, self.value = question, value

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question)
            yield Input(self.value, id="answer")
            with Horizontal(classes="buttons"):
                yield Button("OK", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self.query_one(Input).value if event.button.id == "ok" else None)


class Confirm(Dialog):
    """A question with no undo behind it: the safe answer has the focus, so a reflex
    Enter (or Esc) keeps things as they are."""

    def __init__(self, question: str, verb: str) -> None:
        super().__init__()
        self.question, self.verb = question, verb

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question, classes="question")
            with Horizontal(classes="buttons"):
                yield Button(self.verb, variant="error", id="yes")
                yield Button("Keep it", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class Pick(Dialog):
    """Choose one line of a list; returns its index."""

    def __init__(self, question: str, labels: list[str]) -> None:
        super().__init__()
        self.question, self.labels = question, labels

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question)
            yield OptionList(*(Content(label) for label in self.labels), id="choices")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option_index)


class Search(Dialog):
    """Search every conversation as you type (SQLite FTS5); Enter opens the chat."""

    def __init__(self, store) -> None:
        super().__init__()
        self.store = store
        self.hits: list = []

    def compose(self) -> ComposeResult:
        with Vertical(id="search"):
            yield Label("Search all chats (Enter opens, Down picks, Esc closes)")
            yield Input(id="query", placeholder="words to find")
            yield OptionList(id="hits")

    @on(Input.Changed, "#query")
    def _changed(self, event: Input.Changed) -> None:
        self.hits = self.store.search(event.value, limit=30)
        hits = self.query_one("#hits", OptionList)
        hits.clear_options()
        hits.add_options(  # Content: plain text, so a [word] is not taken for markup
            Option(Content(f"{h.title[:30]} · {h.snippet[:80]}"), id=str(i))
            for i, h in enumerate(self.hits)
        )
        if self.hits:
            hits.highlighted = 0

    @on(Input.Submitted, "#query")
    def _submitted(self) -> None:
        hits = self.query_one("#hits", OptionList)
        if self.hits:
            self.dismiss(self.hits[hits.highlighted or 0])

    def key_down(self) -> None:
        if self.query_one("#query").has_focus and self.hits:
            self.query_one("#hits").focus()

    @on(OptionList.OptionSelected, "#hits")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.hits[event.option_index])


class Settings(Dialog):
    """A conversation's system prompt and sampling; an empty box keeps the default."""

    FIELDS = {
        "temperature": "Temperature",
        "top_k": "Top-k (0 off)",
        "top_p": "Top-p",
        "min_p": "Min-p",
        "repeat_penalty": "Repeat penalty",
        "seed": "Seed (-1 random)",
        "max_tokens": "Reply max tokens",
    }

    def __init__(self, system: str, sampling: dict, defaults: dict) -> None:
        super().__init__()
        self.system, self.sampling, self.defaults = system, sampling, defaults

    @staticmethod
    def _shown(key: str, value) -> str:
        if value is None or value == "":
            return ""
        if key == "seed" and value == RANDOM_SEED:
            return "-1"
        return str(value)

    def compose(self) -> ComposeResult:
        with Vertical(id="settings"):
            yield Label("System prompt")
            yield TextArea(self.system, id="system")
            with Grid(id="sampling"):
                for key, label in self.FIELDS.items():
                    yield Label(label)
                    kind = "number" if limits.RANGES[key][0] == "float" else "integer"
                    yield Input(
                        self._shown(key, self.sampling.get(key)),
                        id=key,
                        placeholder=self._shown(key, self.defaults.get(key)),
                        type=kind,
                        compact=True,
                    )
            yield Label("", id="settings-error")
            with Horizontal(classes="buttons"):
                yield Button("Save", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id != "ok":
            self.dismiss(None)
            return
        sampling = {}
        for key in self.FIELDS:
            text = self.query_one(f"#{key}", Input).value.strip()
            if not text:
                continue
            try:
                value = limits.parse(key, text)  # the CLI's and config's checks, same words
            except ValueError as e:
                self.query_one("#settings-error", Label).update(f"{e}, or leave it empty")
                self.query_one(f"#{key}", Input).focus()
                return
            sampling[key] = RANDOM_SEED if key == "seed" and value == -1 else value
        self.dismiss((self.query_one("#system", TextArea).text, sampling))
