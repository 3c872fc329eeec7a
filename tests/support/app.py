"""The app under Textual's Pilot, as the TUI tests drive it: a simulated laptop, fixed
memory readouts (a live figure is not the layout), and a wait that polls the app."""

from __future__ import annotations

import time

from edgechat.facts.device import GiB
from edgechat.facts.readouts import Readout
from edgechat.tui.app import EdgechatApp, LaunchOptions
from support.devices import simulated_device

READOUT = Readout(rss=210 * 2**20, ram_used=6 * GiB, ram_available=10 * GiB, ram_total=16 * GiB)
LAPTOP = simulated_device(overrides=("memory=16.0 GiB",))


def make_app(start="chat", device=LAPTOP, **options) -> EdgechatApp:
    return EdgechatApp(
        LaunchOptions(start=start, **options), sample_readouts=lambda: READOUT, device=device
    )


async def until(pilot, condition, seconds=60.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await pilot.pause(0.05)


def conversation_text(app) -> str:
    return app.store.export_markdown(app.screen.conversation.id)
