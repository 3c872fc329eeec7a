"""Quality receipts: kept in the data dir, shown by `models info`, `recommend` and the
picker, and ignored once the file they measured has changed."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from edgechat.cli import main
from edgechat.models import receipts, registry
from edgechat.models.receipts import FileRef, Receipt, TextRef
from edgechat.planning.budget import Figures

GOOD = Figures(kl_mean=0.004, kl_p99=0.05, ppl_ratio=1.003, top1=0.98)  # meets every budget
POOR = Figures(kl_mean=0.09, kl_p99=0.9, ppl_ratio=1.08, top1=0.88)  # meets none


def receipt_for(path: Path, figures: Figures = GOOD, quant: str = "Q4_K_M") -> Receipt:
    return Receipt(
        kind="quality",
        model=receipts.file_ref(path, quant),
        ref=FileRef("/models/ref-f16.gguf", "0" * 64, 1000, "F16"),
        text=TextRef("notes.txt", "1" * 64, 12000),
        n_ctx=512,
        tokens_scored=2550,
        ppl=10.2,
        ppl_ref=10.17,
        figures=figures,
    )


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_a_receipt_is_kept_privately_and_found_by_hash(tmp_path):
    model = tmp_path / "model.gguf"
    model.write_bytes(b"weights" * 1000)
    kept = receipts.add(receipt_for(model))
    assert kept.date and kept.version  # dated and signed with edgechat's version
    file = receipts.receipts_file()
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    line = json.loads(file.read_text())
    assert line["model"]["sha256"] == receipts.file_sha256(model)
    assert line["text"] == {"name": "notes.txt", "sha256": "1" * 64, "bytes": 12000}
    assert line["figures"]["kl_p99"] == 0.05
    copy = tmp_path / "elsewhere.gguf"
    shutil.copyfile(model, copy)
    assert receipts.latest(copy) == kept  # the same bytes anywhere: the same receipt
    assert receipts.latest(model).summary() == "KLD 0.004 on your text (notes.txt)"


def test_a_changed_file_has_no_receipts(tmp_path):
    model = tmp_path / "model.gguf"
    model.write_bytes(b"a" * 4096)
    receipts.add(receipt_for(model))
    assert receipts.for_file(model)
    model.write_bytes(b"b" * 4096)  # the same size, other bytes (a new mtime)
    assert receipts.for_file(model) == []
    model.write_bytes(b"a" * 4096)
    assert receipts.for_file(model)  # back as it was: the receipt holds again


def test_the_hash_is_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    model = tmp_path / "model.gguf"
    model.write_bytes(b"x" * 10_000)
    first = receipts.file_sha256(model)
    reads = []
    real_open = Path.open
    monkeypatch.setattr(
        Path, "open", lambda self, *a, **k: reads.append(self) or real_open(self, *a, **k)
    )
    assert receipts.file_sha256(model) == first
    assert model not in reads  # not read again
    os.utime(model, ns=(1, 1))
    assert receipts.file_sha256(model) == first
    assert model in reads  # a new mtime: read through once more


def test_torn_and_foreign_lines_are_skipped(tmp_path):
    model = tmp_path / "model.gguf"
    model.write_bytes(b"w" * 100)
    receipts.add(receipt_for(model))
    with receipts.receipts_file().open("a") as fh:
        fh.write('{"format": 1, "kind": "quality", "model": {"pa')  # a crash mid-line
    receipts.add(receipt_for(model, POOR))
    assert [r.figures for r in receipts.load_all()] == [GOOD, POOR]


@pytest.mark.model
def test_models_info_shows_the_measured_quality(starter_path, capsys):
    model = starter_path
    receipts.add(receipt_for(model, POOR, "Q4_1"))
    rc, out, _ = run(capsys, "models", "info", str(model))
    assert rc == 0
    assert "quality    KLD 0.09, p99 0.9, top-1 88.0%, PPL x1.080 against ref-f16.gguf" in out
    assert "misses the chat and summarise budgets: mean KLD 0.09 > 0.06" in out
    rc, out, _ = run(capsys, "models", "info", str(model), "--json")
    quality = json.loads(out)["quality"]
    assert quality[0]["summary"] == "KLD 0.09 on your text (notes.txt)"
    assert quality[0]["budgets"]["code"][0] == "mean KLD 0.09 > 0.015"
    rc, out, _ = run(capsys, "models", "info", "starter", "--json")  # by its id too
    assert json.loads(out)["quality"][0]["figures"] == quality[0]["figures"]


def pulled(tmp_path: Path, catalog_id: str, repo: str, quant: str) -> Path:
    """A file registered as if pulled from the catalog repo (the recommender reads the
    catalog's figures for it, not the file: its bytes only need to be its own)."""
    path = tmp_path / f"{catalog_id}-{quant}.gguf"
    path.write_bytes(f"{catalog_id}:{quant}".encode() * 100)
    registry.register(
        f"{catalog_id}:{quant}",
        {
            "path": str(path),
            "files": [str(path)],
            "repo": repo,
            "quant": quant,
            "size": 1,
            "sha256": [],
            "source": "hub",
        },
    )
    return path


def test_recommend_prefers_a_quant_whose_receipt_meets_the_budget(capsys, tmp_path):
    coder, repo = "qwen2.5-coder-1.5b-instruct", "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF"
    args = ("recommend", "--task", "code", "--all", "--memory", "16G", "--json")
    rc, out, _ = run(capsys, *args)
    before = {c["model"]: c for c in json.loads(out)["choices"]}[coder]
    assert before["quant"] == "Q8_0" and before["measured"] is None  # 8-bit first for code
    receipts.add(receipt_for(pulled(tmp_path, coder, repo, "Q4_K_M")))
    rc, out, _ = run(capsys, *args)
    data = json.loads(out)
    after = {c["model"]: c for c in data["choices"]}[coder]
    assert after["quant"] == "Q4_K_M"  # measured on the user's text: it holds for code
    assert after["meets_budget"] is True and after["measured"]["kl_mean"] == 0.004
    assert after["reason"].startswith("Q4_K_M meets the code budget on your text (KLD 0.004)")
    assert data["measured"][0]["id"] == f"{coder}:Q4_K_M" and data["measured"][0]["meets_budget"]
    rc, out, _ = run(capsys, "recommend", "--task", "code", "--all", "--memory", "16G")
    words = " ".join(out.split())  # lines wrapped at 80 columns
    assert f"{coder}:Q4_K_M: KLD 0.004 on your text (notes.txt), meets the code budget" in words


def test_recommend_puts_a_quant_that_missed_the_budget_last(capsys, tmp_path):
    chat, repo = "qwen2.5-1.5b-instruct", "Qwen/Qwen2.5-1.5B-Instruct-GGUF"
    receipts.add(receipt_for(pulled(tmp_path, chat, repo, "Q4_K_M"), POOR))
    rc, out, _ = run(capsys, "recommend", "--all", "--memory", "16G", "--json")
    choice = {c["model"]: c for c in json.loads(out)["choices"]}[chat]
    assert choice["quant"] != "Q4_K_M"
    assert "Q4_K_M missed the chat budget on your text" in choice["reason"]


def test_recommend_unit_weighs_measured_figures():
    from support.devices import simulated_device

    from edgechat.planning import catalog
    from edgechat.planning.recommend import choose

    model = catalog.load()["qwen2.5-coder-1.5b-instruct"]
    device = simulated_device()
    plain = choose(model, "code", 4096, device, 25.0)
    measured = {f"{model.id}:Q3_K_M": GOOD, f"{model.id}:Q8_0": POOR}
    weighed = choose(model, "code", 4096, device, 25.0, measured=measured)
    assert plain.quant == "Q8_0"
    assert weighed.quant == "Q3_K_M" and weighed.meets_budget  # smallest that holds, measured
    assert weighed.score > choose(model, "code", 4096, device, 25.0, quant="Q3_K_M").score


async def test_the_picker_shows_the_measured_quality(starter_path):
    from support.app import make_app, until

    from edgechat.tui.wizard import WizardScreen

    receipts.add(receipt_for(starter_path, GOOD, "Q4_1"))
    app = make_app(start="auto")
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, WizardScreen))
        await pilot.pause()
        table = app.screen.query_one("#choices")
        row = table.get_row_at(app.screen.rows.index(registry.STARTER_ID))
        assert str(row[0]) == f"{registry.STARTER_ID} KLD 0.004"
        # The why column is recommend's reason, word for word (one ranking, one wording).
        assert str(row[-1]).startswith("meets the chat budget on your text (KLD 0.004)")
