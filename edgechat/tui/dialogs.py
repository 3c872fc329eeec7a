"""Small modal dialogs: ask for a line of text, or a conversation's settings."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, TextArea


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


class Settings(Dialog):
    """A conversation's system prompt and sampling."""

    def __init__(self, system: str, sampling: dict) -> None:
        super().__init__()
        self.system, self.sampling = system, sampling

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("System prompt")
            yield TextArea(self.system, id="system")
            yield Label("Temperature (0 = always the likeliest word)")
            yield Input(
                str(self.sampling.get("temperature", "")),
                id="temperature",
                placeholder="default",
                type="number",
            )
            yield Label("Longest reply, in tokens")
            yield Input(
                str(self.sampling.get("max_tokens", "")),
                id="max_tokens",
                placeholder="default",
                type="integer",
            )
            with Horizontal(classes="buttons"):
                yield Button("Save", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id != "ok":
            self.dismiss(None)
            return
        sampling = {}
        temperature = self.query_one("#temperature", Input).value.strip()
        max_tokens = self.query_one("#max_tokens", Input).value.strip()
        if temperature:
            sampling["temperature"] = max(0.0, float(temperature))
        if max_tokens:
            sampling["max_tokens"] = max(1, int(max_tokens))
        self.dismiss((self.query_one("#system", TextArea).text, sampling))
