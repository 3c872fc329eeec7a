"""The command palette, with Enter that runs what was typed.

Textual's palette searches in a worker; an Enter pressed before that search finishes
picked the first entry of the stale list (whatever was highlighted before the typing).
Here Enter waits for the search of the text in the box, then picks its best match.
"""

from __future__ import annotations

import contextlib

from textual import on
from textual.command import CommandPalette
from textual.widgets import Button, Input
from textual.worker import WorkerCancelled, WorkerFailed


class Palette(CommandPalette):
    @on(Input.Submitted)
    @on(Button.Pressed)
    def _select_or_command(self, event: Input.Submitted | Button.Pressed | None = None) -> None:
        if event is not None:
            event.prevent_default()  # Textual's own handler (the base class) stays out
        if isinstance(event, Input.Submitted):
            searching = [
                w
                for w in self.workers
                if w.group == self._GATHER_COMMANDS_GROUP and not w.is_finished
            ]
            if searching:
                event.stop()
                self.run_worker(self._after(searching), group="edgechat-enter")
                return
        super()._select_or_command(event)

    async def _after(self, searching) -> None:
        for worker in searching:
            with contextlib.suppress(WorkerCancelled, WorkerFailed):
                await worker.wait()
        super()._select_or_command()
