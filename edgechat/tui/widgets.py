"""The chat screen's parts: the message box, the readout line and the stream messages."""

from __future__ import annotations

from collections import deque

from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.geometry import Offset
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Label, ProgressBar, Static, TextArea


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

    waiting = reactive(False)  # the model is loading: typing goes on, sending waits

    def __init__(self, **kwargs) -> None:
        super().__init__(soft_wrap=True, show_line_numbers=False, **kwargs)
        self.sent: list[str] = []
        self._back = 0  # how far back in ``sent`` the box is; 0: the draft
        self._draft = ""  # what was in the box when Up first left it

    def watch_waiting(self, waiting: bool) -> None:
        # Not Textual's ``loading``: its overlay swallows every key typed meanwhile, and a
        # first load (with the CPU kernels' check) takes seconds.
        self.set_class(waiting, "-waiting")
        self.border_subtitle = (
            "loading the model: type away; Enter sends once it has loaded" if waiting else ""
        )

    @property
    def draft(self) -> str:
        """The message being written: the box, or, while a sent one is shown unchanged,
        what was there before Up (the one to keep)."""
        if self._back and self.text == self.sent[-self._back]:
            return self._draft
        return self.text

    def restore(self, draft: str) -> None:
        """Show a chat's kept draft (a chat opened), its history walk started afresh."""
        self._back, self._draft = 0, ""
        if self.text != draft:
            self.text = draft
            self.move_cursor(self.document.end)

    def _show(self, back: int) -> None:
        self._back = back
        self.text = self.sent[-back] if back else self._draft
        self.move_cursor(self.document.end)

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.prevent_default()
            event.stop()
            text = self.text.strip()
            if text:
                self.sent.append(text)
                self._back, self._draft = 0, ""
                self.clear()
                self.post_message(self.Send(text))
            return
        if event.key in ("shift+enter", "ctrl+j"):
            event.prevent_default()
            event.stop()
            self.insert("\n")
            return
        # Up and Down walk what was sent, as a shell's history does: the draft is kept
        # when Up leaves it, and Down past the newest entry brings it back. A sent
        # message changed in the box is the draft from then on.
        edited = self._back and self.text != self.sent[-self._back]
        if event.key == "up" and self.cursor_location[0] == 0 and self.sent:
            event.prevent_default()
            event.stop()
            if edited or not self._back:
                self._draft, self._back = self.text, 0
            self._show(min(self._back + 1, len(self.sent)))
            return
        if event.key == "down" and self._back and self.cursor_at_last_line:
            event.prevent_default()
            event.stop()
            if edited:
                self._draft, self._back = self.text, 1
            self._show(self._back - 1)
            return
        await super()._on_key(event)


class ChatView(VerticalScroll):
    """The conversation, anchored (Textual's ``anchor()``): each layout pass keeps its
    end in view as a reply, a note or the summary's bar grows (or the box under it
    does), until the reader scrolls up; back at the end, it follows again. A scroll_end
    after each write ran before the Markdown's new blocks were laid out, and stopped
    lines short. A chat shorter than the view stays at its top: Textual 8.2.8 moves an
    anchored view to a negative offset there (textual#6652), clamped here."""

    def on_mount(self) -> None:
        self.anchor()

    @property
    def scroll_offset(self) -> Offset:
        offset = super().scroll_offset
        return Offset(offset.x, max(0, offset.y))


class UserText(Static):
    """What the user typed, shown as typed: their own line breaks and characters kept
    (Markdown would join lines and eat ``*`` and ``_``)."""

    def __init__(self, text: str, **kwargs) -> None:
        super().__init__(text, markup=False, **kwargs)
        self.source = text


class Readouts(Horizontal):
    """Memory, context and speed, refreshed every second."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._rss: deque[float] = deque(maxlen=30)  # MiB, for the sparkline

    def compose(self) -> ComposeResult:
        yield Label("RSS -", id="rss")
        yield Label("", id="rss-spark")
        yield Label("RAM -", id="ram")
        yield Label("", id="vram")
        yield Label("ctx", id="ctx")
        yield ProgressBar(total=1, show_eta=False, show_percentage=False, id="ctx-bar")
        yield Label("", id="speed")

    def show_memory(self, r, remote: bool = False) -> None:
        """``remote``: the model's memory is a server's, so only the app's is shown."""
        if not self._rss:  # start level, not from zero
            self._rss.extend([r.rss / 2**20] * 29)
        self._rss.append(r.rss / 2**20)
        rss = f"remote · app {_short(r.rss)}" if remote else f"RSS {_short(r.rss)}"
        self.query_one("#rss", Label).update(rss)
        self.query_one("#rss-spark", Label).update(trend(self._rss, TREND_WIDTH, TREND_FLOOR_MIB))
        self.query_one("#ram", Label).update(f"RAM {_short(r.ram_used)}/{_short(r.ram_total)}")
        if r.vram_total:
            vram = self.query_one("#vram", Label)
            vram.update(vram_text(r))
            vram.tooltip = f"whole GPU: {_short(r.vram_used)} used of {_short(r.vram_total)}"
            vram.add_class("shown")

    def show_context(self, used: int, size: int) -> None:
        self.query_one("#ctx", Label).update(f"ctx {used}/{size}")
        self.query_one("#ctx-bar", ProgressBar).update(total=max(1, size), progress=used)

    def show_speed(self, stats, threads_why: str = "") -> None:
        speed = self.query_one("#speed", Label)
        n = getattr(stats, "threads", 0)
        speed.update(f"{stats.gen_tps:.0f} tok/s {stats.ttft_s:.1f}s" + (f" {n}thr" if n else ""))
        speed.tooltip = (
            f"{stats.gen_tps:.1f} tokens/s, first token after {stats.ttft_s:.2f} s"
            + (f", on {n} CPU thread{'s' * (n > 1)}" if n else "")
            + (f" ({threads_why})" if threads_why else "")
        )


BARS = "▁▂▃▄▅▆▇█"
TREND_WIDTH = 8  # columns of the RSS trend
TREND_FLOOR_MIB = 64.0  # the least change that fills the trend's height


def trend(values, width: int, floor: float) -> str:
    """``values`` as ``width`` bars (each the highest of its share, the newest last),
    from the lowest value up, where a full bar is a change of at least ``floor``:
    Textual's Sparkline always stretches its lowest to highest value to full height,
    so a 1 MiB wobble of a 300 MiB process looked like a leap."""
    values = list(values)
    if not values:
        return ""
    n = len(values)
    shares = [values[i * n // width : (i + 1) * n // width] or [values[-1]] for i in range(width)]
    peaks = [max(share) for share in shares]
    low = min(values)
    extent = max(max(values) - low, floor)
    return "".join(BARS[round((p - low) / extent * (len(BARS) - 1))] for p in peaks)


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
