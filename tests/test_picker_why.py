"""The picker says why it suggests each model, where the terminal is wide enough."""

from __future__ import annotations

from support.app import make_app, until

from edgechat.tui.wizard import WizardScreen, _fit


async def test_the_why_column_shows_at_140_columns(starter_path):
    app = make_app(start="auto")
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, WizardScreen))
        await pilot.pause()
        table = app.screen.query_one("#choices")
        labels = [str(c.label) for c in table.columns.values()]
        assert labels[-1] == "why"
        recommended = [r for r in range(table.row_count) if table.get_row_at(r)[-1]]
        assert recommended
        for r in recommended:
            assert len(str(table.get_row_at(r)[-1])) <= app.screen.why_width
        assert table.virtual_size.width <= table.size.width  # all of it on screen
    narrow = make_app(start="auto")
    async with narrow.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(narrow.screen, WizardScreen))
        labels = [str(c.label) for c in narrow.screen.query_one("#choices").columns.values()]
        assert "why" not in labels  # 80x24 keeps its layout


def test_reasons_are_cut_at_clauses():
    reason = "Q4_K_M, the usual balance of size and quality; tight: 90 % of RAM"
    assert _fit(reason, 80) == reason
    assert _fit(reason, 50) == "Q4_K_M, the usual balance of size and quality"
    assert _fit(reason, 10) == "Q4_K_M, t…"
