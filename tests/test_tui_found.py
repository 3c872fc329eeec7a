"""What a newcomer found in the app (issue 23), walked with Pilot on the real starter model:
the picker shows `recommend`'s ranking and rounding, a screenshot in a fresh home, the
title of a chat a summary started, and two windows on one home keeping their own chats."""

from __future__ import annotations

import pytest
from conftest import simulated_device
from test_tui import make_app as _make_app
from test_tui import until
from textual.widgets import DataTable

from edgechat.facts.device import GiB
from edgechat.tui.wizard import WizardScreen

pytestmark = pytest.mark.model


def make_app(**options):
    return _make_app(**{"threads": 1, **options})


# -- 10. the picker and `recommend`: one ranking, one rounding ---------------------------

PI = simulated_device(
    board="Raspberry Pi 4 Model B Rev 1.4",  # a slow board: big models run below 1 token/s
    ram_total=16 * GiB,
    ram_available=14 * GiB,
    simd=("NEON",),
    arch="aarch64",
    overrides=("memory=16.0 GiB",),
)


async def test_the_picker_shows_the_ranking_and_figures_recommend_prints(starter_path):
    from edgechat.planning.recommend import speed_text
    from edgechat.planning.speed import cpu_bandwidth
    from edgechat.service import recommendations

    app = make_app(start="auto", device=PI)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, WizardScreen) and app.screen.rows)
        await until(pilot, lambda: len(app.screen.rows) > 1)
        table = app.screen.query_one(DataTable)
        shown = {
            app.screen.rows[i]: str(table.get_row_at(i)[3]) for i in range(len(app.screen.rows))
        }
        order = list(app.screen.rows)
    ranked = recommendations(PI, "chat", app.request.ctx, "f16", cpu_bandwidth(PI))[:15]
    assert order[: len(ranked)] == [c.id for c in ranked]  # the same order
    assert order[0] == "smollm2-135m-instruct:Q4_1"  # installed, fits, quick: first
    for c in ranked:
        assert shown[c.id] == speed_text(c.speed.tokens_per_s)
    assert any(c.speed.tokens_per_s < 3 for c in ranked)  # slower than reading, on a Pi
    assert speed_text(0.3) == "0.3" and speed_text(12.4) == "12"  # never "0" tokens/s


# -- 3. a screenshot in a fresh home: saved where it can be, and where is said ------------


async def _screenshot(app, pilot) -> str:
    from textual.command import CommandInput
    from textual.widgets import Input

    await pilot.press("ctrl+p")
    await pilot.pause(0.3)
    box = app.screen.query_one(CommandInput)
    box.value = "Screenshot"
    box.post_message(Input.Submitted(box, box.value))
    await until(pilot, lambda: any("screenshot" in n.message for n in app._notifications))
    return next(n.message for n in app._notifications if "screenshot" in n.message)


@pytest.mark.parametrize("where", ["downloads", "current folder", "data dir"])
async def test_a_screenshot_is_saved_where_it_can_be_and_says_where(
    starter_path, tmp_path, monkeypatch, edgechat_home, where
):
    home = tmp_path / "fresh-home"  # no Downloads folder, as in a fresh account
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_DOWNLOAD_DIR", raising=False)
    cwd = tmp_path / "work"
    cwd.mkdir()
    expected = {"downloads": home / "Downloads", "current folder": cwd}
    if where == "downloads":
        (home / "Downloads").mkdir()
    monkeypatch.chdir(cwd if where != "data dir" else "/proc")  # /proc takes no file
    expected["data dir"] = edgechat_home / "data"
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.engine is not None)
        said = await _screenshot(app, pilot)
    assert said.startswith(f"screenshot saved to {expected[where]}/"), said
    saved = list(expected[where].glob("edgechat_*.svg"))
    assert len(saved) == 1 and saved[0].read_text().startswith("<svg")
