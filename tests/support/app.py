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


class FakeOpener:
    """Opens a ``FakeEngine`` (tests/support/fake_engine.py) for each load the app asks
    for: a server's (``is_local`` False, ``where`` its host:port) when the request names
    one, where ``unreachable`` says it cannot be reached. ``engine_options`` go to each
    engine (``respond``, ``delay``); ``opened``: the engines, in order; ``hold``: a
    model's name -> an Event its load waits for."""

    def __init__(self, unreachable: tuple[str, ...] = (), **engine_options) -> None:
        self.unreachable, self.engine_options = unreachable, engine_options
        self.opened: list = []
        self.requests: list = []
        self.hold: dict = {}

    def __call__(self, request, *, say, device, run):
        from urllib.parse import urlsplit

        from edgechat.errors import EdgechatError
        from edgechat.service import Loaded
        from support.fake_engine import FakeEngine

        self.requests.append(request)
        if request.model in self.hold:
            assert self.hold[request.model].wait(30)
        if request.remote:
            where = urlsplit(request.remote).netloc
            if where in self.unreachable:
                raise EdgechatError(f"cannot reach the server at {request.remote}")
            engine = FakeEngine(is_local=False, where=where, **self.engine_options)
            label = f"fake @ {where}"
        else:
            engine = run(lambda: FakeEngine(**self.engine_options))
            label = request.model or "fake-model"
        self.opened.append(engine)
        return Loaded(engine, None, None, (), label)


def fake_app(opener: FakeOpener | None = None, start="chat", **options) -> EdgechatApp:
    """The app on the laptop, its models opened by ``opener`` (a FakeOpener)."""
    return EdgechatApp(
        LaunchOptions(start=start, **options),
        sample_readouts=lambda: READOUT,
        device=LAPTOP,
        opener=opener or FakeOpener(),
    )


def hold_still(area) -> None:
    """A text box that no longer blinks, drawn the same whatever the blink's phase was
    (a snapshot's). Textual 8.2.8's TextArea caches a line under one key for "cursor
    hidden mid-blink" and "not blinking", so a box stopped after a hidden phase was drawn
    had no cursor, and otherwise had one (the chat snapshots failed one run in two, on
    main too): its line cache is cleared (as a style change does) to draw it afresh."""
    area.cursor_blink = False
    area.notify_style_update()
    area.refresh()
