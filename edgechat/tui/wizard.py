"""The model picker: this device, the ranked recommendations for a task, pull and load."""

from __future__ import annotations

import time

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Label, ProgressBar

from edgechat.facts.device import format_size
from edgechat.text import clean

FIT_BADGE = {"comfortable": "✔ fits", "tight": "~ tight", "does not fit": "✘ too big"}
# Models other tools keep here come under this heading; choosing one imports it.
ON_THIS_MACHINE = "── on this machine ──"
RANKED = "── for this machine ──"  # the ranking's heading, under models found here
HEADINGS = (ON_THIS_MACHINE, RANKED)
STORE_SHORT = {"ollama": "Ollama", "lmstudio": "LM Studio", "llamacpp": "llama.cpp", "hf": "HF"}


class PullProgress(Message):
    def __init__(self, done: int, total: int, rate: float) -> None:
        super().__init__()
        self.done, self.total, self.rate = done, total, rate


class PullDone(Message):
    def __init__(self, model_id: str | None, error: str | None = None) -> None:
        super().__init__()
        self.model_id, self.error = model_id, error


class PullCancelled(Exception):
    pass


class BandwidthMeasured(Message):
    """The CPU's bandwidth is known now: the recommendations can be ranked."""


class WizardScreen(Screen):
    BINDINGS = [
        Binding("escape", "cancel", "Cancel / back"),
        Binding("enter", "choose", "Use this model", show=True, priority=False),
        Binding("ctrl+r", "remote", "Use a server", show=False),  # also in Ctrl+P
    ]

    def __init__(self) -> None:
        super().__init__()
        self.chosen_task = "chat"
        self.rows: list[str] = []  # model id per table row
        self.found: dict[str, object] = {}  # row key -> a model another tool keeps (Found)
        self._cancel = False
        self._pulling = False

    def compose(self) -> ComposeResult:
        with Vertical(id="wizard"):
            yield Label("", id="device")
            with Horizontal(id="tasks"):
                for task in ("chat", "code", "math", "summarise"):
                    yield Button(task, id=f"task-{task}", compact=True)
            yield DataTable(id="choices", cursor_type="row", zebra_stripes=True)
            yield Label("", id="wizard-help")
            with Vertical(id="pull"):
                yield Label("", id="pull-label")
                yield ProgressBar(id="pull-bar", show_eta=True)
        yield Footer()

    def on_mount(self) -> None:
        d = self.app.device
        gpus = (
            ", ".join(
                f"{g.name} ({'unified' if g.unified else format_size(g.vram_total)})"
                for g in d.gpus
            )
            or "no GPU"
        )
        board = f" · {d.board}" if d.board else ""
        self.query_one("#device", Label).update(
            f"This device: {format_size(d.ram_total)} RAM ({format_size(d.ram_available)} free)"
            f" · {d.cores_usable or d.cores_physical or '?'} cores · {gpus}{board}"
        )
        self.query_one("#wizard-help", Label).update(
            "Enter uses the highlighted model (installed ones load at once, others "
            f"download first); {_escape_does(self.app)}."
        )
        table = self.query_one(DataTable)
        # A wide terminal (140 columns) has room for why each model is suggested.
        self.why_width = max(0, self.app.size.width - 84) if self.app.size.width >= 120 else 0
        table.add_columns(
            "model", "RAM", "VRAM", "tok/s", "fit", "", *(["why"] * bool(self.why_width))
        )
        self.show_task("chat")
        table.focus()

    def show_task(self, task: str) -> None:
        self.chosen_task = task
        for button in self.query("#tasks Button"):
            button.variant = "primary" if button.id == f"task-{task}" else "default"
        # What other tools keep here works offline at once: it comes first, under its
        # own heading, then the one ranking `edgechat recommend` prints, under its own.
        found = self._found_rows()
        heading = [(RANKED, ("",) * (len(found[0][1])))] if found else []
        rows = found + heading + self._rows(task)
        table = self.query_one(DataTable)
        table.clear()
        measured = self.app.choices.measured()
        # The name column leaves the figures room on screen (a file name from another
        # tool can be 70 characters: cut in the middle, its quant kept).
        room = max(24, self.app.size.width - 46 - self.why_width)
        for model_id, cells in rows:
            found = self.found.get(model_id)
            where = f" · {STORE_SHORT[found.store]}" if found else ""  # which tool keeps it
            shown = _short(found) if found else model_id
            label = Text(_squeeze(clean(shown), room - len(where)))  # no markup in a name
            label.append(where, style="dim")
            if model_id in measured:  # measured on the user's own text
                label.append(f" KLD {measured[model_id].figures.kl_mean:.3g}", style="dim")
            table.add_row(label, *cells)
        self.rows = [model_id for model_id, _ in rows]
        # The cursor starts on a model, never on a heading.
        first = next((i for i, model_id in enumerate(self.rows) if model_id not in HEADINGS), 0)
        table.move_cursor(row=first)

    def _rows(self, task: str) -> list[tuple[str, tuple[str, ...]]]:
        """The ranking `edgechat recommend` prints, installed models in it (●), then any
        installed model the task does not suit (a base model): they can be picked too."""

        rows = []
        recommended = self.app.choices.recommendations(task)
        if recommended is None:  # the CPU's bandwidth is unknown: measure it, then refill
            self._measure_bandwidth()
        for c in recommended or []:
            rows.append((c.id, self._cells(c, "●" if c.installed else "")))
        ranked = {model_id for model_id, _ in rows}
        why = [""] * bool(self.why_width)
        for model_id in self.app.choices.installed():
            if model_id not in ranked:
                rows.append((model_id, ("", "", "", "installed", "●", *why)))
        return rows

    def _found_rows(self) -> list[tuple[str, tuple[str, ...]]]:
        """Models Ollama, LM Studio, llama.cpp and the HF cache keep here, under their own
        heading: choosing one imports it where it lies (no copy), then loads it."""
        fits = self.app.choices.machine_fits(self.chosen_task)
        if not fits:
            return []
        why = [""] * bool(self.why_width)
        rows = [(ON_THIS_MACHINE, ("", "", "", "", "", *why))]
        for f, choice in fits:
            key = f"{f.store}:{f.name}"
            self.found[key] = f
            # Blank while the CPU is being measured, or where it does not suit the task.
            rows.append((key, self._cells(choice, "○") if choice else ("", "", "", "", "○", *why)))
        return rows

    def _cells(self, c, mark: str) -> tuple:
        """A choice's columns: RAM, VRAM, tok/s, fit, the mark, and why (when shown)."""
        from edgechat.planning.recommend import speed_text

        e = c.estimate
        vram = "unified" if e.backend == "metal" else (format_size(e.vram) if e.vram else "-")
        reason = [Text(_fit(c.reason, self.why_width))] if self.why_width else []
        badge = FIT_BADGE[c.fit.label]
        return (
            format_size(e.ram_needed),
            vram,
            speed_text(c.speed.tokens_per_s),
            badge,
            mark,
            *reason,
        )

    @work(thread=True, exclusive=True, group="bandwidth")
    def _measure_bandwidth(self) -> None:
        self.app.choices.measure_bandwidth()
        self.post_message(BandwidthMeasured())

    def on_bandwidth_measured(self) -> None:
        self.show_task(self.chosen_task)

    @on(Button.Pressed, "#tasks Button")
    def _task(self, event: Button.Pressed) -> None:
        self.show_task(event.button.id.removeprefix("task-"))
        self.query_one(DataTable).focus()

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.action_choose()

    def action_choose(self) -> None:
        if self._pulling or not self.rows:
            return
        model_id = self.rows[self.query_one(DataTable).cursor_row]
        if model_id in self.app.choices.installed():
            self.app.use_model(model_id, remember=True)
            return
        if model_id in HEADINGS:
            return
        if model_id in self.found:
            self._pulling = True
            self.query_one("#pull").add_class("active")
            self.query_one("#pull-label", Label).update(
                f"importing {self.found[model_id].name} where it lies (no copy) ..."
            )
            self._adopt(self.found[model_id])
            return
        self._pulling, self._cancel = True, False
        self.query_one("#pull").add_class("active")
        self.query_one("#pull-label", Label).update(f"pulling {model_id} ... (Esc cancels)")
        self._pull(model_id)

    def action_remote(self) -> None:
        """Chat on an OpenAI-compatible server instead of a model on this device."""
        self.app.ask_remote()

    def action_cancel(self) -> None:
        if self._pulling:
            self._cancel = True
        else:
            self.app.picker_closed()

    @work(thread=True, exclusive=True, group="pull")
    def _pull(self, model_id: str) -> None:
        from edgechat.errors import EdgechatError
        from edgechat.models import hub

        started = time.monotonic()

        def progress(name: str, done: int, total: int) -> None:
            if self._cancel:
                raise PullCancelled()  # raising here is how Esc stops a transfer
            rate = done / max(1e-3, time.monotonic() - started)
            self.post_message(PullProgress(done, total, rate))

        try:
            pulled = hub.pull(model_id, progress=progress)
            self.post_message(PullDone(pulled.model_id))
        except PullCancelled:
            self.post_message(PullDone(None, "cancelled; the partial download is kept"))
        except EdgechatError as e:
            self.post_message(PullDone(None, str(e)))

    @work(thread=True, exclusive=True, group="pull")
    def _adopt(self, found) -> None:
        from edgechat.errors import EdgechatError

        try:
            self.post_message(PullDone(self.app.choices.adopt_model(found.store, found.name)))
        except EdgechatError as e:
            self.post_message(PullDone(None, str(e)))

    def on_pull_progress(self, message: PullProgress) -> None:
        bar = self.query_one("#pull-bar", ProgressBar)
        bar.update(total=max(1, message.total), progress=message.done)
        self.query_one("#pull-label", Label).update(
            f"{format_size(message.done)} of {format_size(message.total)} at "
            f"{format_size(int(message.rate))}/s (Esc cancels)"
        )

    def on_pull_done(self, message: PullDone) -> None:
        self._pulling = False
        self.query_one("#pull").remove_class("active")
        if message.error:
            self.notify(message.error, severity="error", timeout=10)
            return
        self.show_task(self.chosen_task)
        self.app.use_model(message.model_id, remember=True)


def _escape_does(app) -> str:
    """What Esc in the picker does now (``EdgechatApp.picker_closed``), as its help says."""
    from edgechat.errors import EdgechatError
    from edgechat.models import registry

    state = app.session.state
    if state.engine is not None or state.loading or state.error is not None:
        return "Esc goes back to the chat"
    installed = app.choices.installed()
    if not installed:
        return "Esc: nothing to chat with yet, choose one to download"
    try:
        path = registry.resolve(app.request.model, app.request.default_model)
    except EdgechatError:
        return "Esc goes back to the chat"
    label = next((model_id for model_id, p in installed.items() if p == path), path.name)
    return f"Esc chats with {clean(label)}"


def _squeeze(text: str, width: int) -> str:
    """``text`` in ``width`` characters at most, cut in the middle where it must be."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return f"{text[:head]}…{text[len(text) - (width - 1 - head) :]}"


def _short(found) -> str:
    """A model another tool keeps, as short as says which: Ollama's name, else the file's."""
    return found.name if found.store == "ollama" else found.path.name


def _fit(reason: str, width: int) -> str:
    """As many of the reason's clauses as fit ``width`` columns; the first one cut if need be."""
    out = ""
    for clause in reason.split("; "):
        joined = f"{out}; {clause}" if out else clause
        if len(joined) > width:
            break
        out = joined
    return out or (reason[: width - 1] + "…")
