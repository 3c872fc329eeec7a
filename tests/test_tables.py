"""Every table the CLI prints keeps to 80 columns whatever the figures (issue 31 item 13):
a tiny model writing 10k tokens/s, a perplexity in the millions, a model of a terabyte,
an id or a title longer than the line. Each renderer is fed such figures directly, so
nothing here depends on how fast this machine is."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from edgechat.cli.table import compact, cut, labelled, num, size

WIDE = 80
TiB = 2**40


def assert_fits(lines: list[str], whole: tuple[str, ...] = ()) -> None:
    """Every line within 80 columns, but a name longer than the line itself (``whole``),
    which stays whole on a line of its own for the user to copy."""
    from rich.cells import cell_len

    wide = [line for line in lines if cell_len(line) > WIDE and line.strip() not in whole]
    assert wide == [], "\n".join(wide)


# -- the figures ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, width, decimals, shown",
    [
        (104.3, 6, 1, "104.3"),  # fits: as it always was
        (10153.9, 6, 1, "10154"),  # the tiny model on a fast CPU: decimals go first
        (10153.9, 4, 1, "10k"),
        (1234567.0, 4, 1, "1.2M"),
        (999_999.0, 5, 1, "1.0M"),  # never "1000.0k"
        (2.5e9, 6, 1, "2.5G"),
        (1e30, 6, 1, "1e30"),
        (0.012345, 7, 4, "0.0123"),
        (12345.6789, 7, 4, "12345.7"),
        (-123456.0, 6, 1, "-123k"),
        (float("inf"), 6, 1, "inf"),
        (float("nan"), 6, 1, "nan"),
    ],
)
def test_a_figure_keeps_to_its_width(value, width, decimals, shown):
    assert compact(value, width, decimals) == shown
    assert len(num(value, width, decimals)) == width
    assert num(None, 5) == "    -"


def test_text_sizes_and_labels_keep_to_their_width():
    assert cut("smollm2", 10) == "smollm2"
    assert cut("a-very-long-model-name", 10) == "a-very-lo…"
    assert cut("日本語のタイトル", 7) == "日本語…"  # terminal cells, two a character
    assert size(2 * TiB, 9) == " 2048 GiB" and len(size(900 * TiB, 8)) == 8
    assert size(None, 8) == " unknown"
    assert labelled("short", 10, "1 2") == ["short      1 2"]
    assert labelled("x" * 12, 10, "1 2") == ["x" * 12, " " * 11 + "1 2"]  # kept whole


# -- each table ----------------------------------------------------------------------------


def _shrink_result(tps: float, kld: float, ppl: float):
    from edgechat.lab.shrink import ShrinkResult
    from edgechat.lab.verdict import Candidate, Verdict
    from edgechat.planning.budget import Figures
    from edgechat.planning.budget import default as default_budget

    def cand(cid, bytes_, fits=True):
        figures = Figures(kl_mean=kld, kl_p99=kld * 3, ppl_ratio=ppl, top1=1.0)
        return Candidate(
            cid,
            cid.split("+")[0],
            "+" in cid,
            bytes_,
            bits_per_weight=16.0,
            figures=figures,
            fits=fits,
            ram_needed=bytes_ * 2,
            tokens_per_s=tps,
        )

    candidates = (
        cand("Q4_K_M", 1 << 20),
        cand("IQ2_XXS+imatrix", 3 * TiB, fits=False),
        cand("Q8_0", 999 * 2**20),
    )
    verdict = Verdict("Q4_K_M", "the smallest that meets the budget", default_budget("chat"), {})
    return ShrinkResult(
        source="/models/src.gguf",
        source_quant="F16",
        source_size=2 * TiB,
        task="chat",
        n_ctx=512,
        text={
            "name": "notes.txt",
            "tokens": 1,
            "calibration": {"chunks": 1},
            "held_out": {"chunks": 1},
        },
        candidates=candidates,
        verdict=verdict,
        work=Path("/w"),
        reused=(),
        failed={"IQ1_M+imatrix": "llama.cpp refused it: " + "a reason that goes on " * 8},
        seconds=1.0,
    )


@pytest.mark.parametrize("tps, kld, ppl", [(10153.9, 0.01, 1.01), (3e9, 12345.678, 9e7)])
def test_the_shrink_table(capsys, tps, kld, ppl):
    """The row the issue quotes (Q4_K_M ... 10153.9 ... pick) was 81 columns before."""
    from edgechat.cli.shrink import _render

    _render(_shrink_result(tps, kld, ppl), 4096)
    out = capsys.readouterr().out
    assert_fits(out.splitlines())
    row = next(line for line in out.splitlines() if line.startswith("Q4_K_M"))
    assert row.endswith(" pick") and compact(tps, 6) in row
    assert "1 token, 1 chunk to calibrate, 1 other to score" in out  # no "1 chunks"


def test_the_bench_table():
    from edgechat.cli.lab import bench_table
    from edgechat.lab.bench import BenchResult

    def result(model, gen):
        return BenchResult(
            model, "/m.gguf", 1, 2048, 0, 512, 128, 1234.5, 1.5e6, gen, 99999.123, 5 * TiB
        )

    lines = bench_table(
        [result("smollm2-135m-instruct:Q4_1", 10153.9), result("m" * 90, 0.2)], 1, 2048
    )
    assert_fits(lines, whole=("m" * 90,))
    assert lines[0] == "medians of 1 run, context 2048 tokens, greedy"
    assert "m" * 90 in lines  # a name too long for its column: whole, on its own line
    bars = [line for line in lines if "█" in line]
    assert len(bars) == 2 and bars[0].endswith(" 10153.9 tok/s")


def test_the_recommend_table():
    from edgechat.cli.facts import ranking_table
    from edgechat.facts.device import Device, GiB
    from edgechat.planning import catalog
    from edgechat.planning.recommend import recommend

    device = Device(
        ram_total=16 * GiB,
        ram_available=14 * GiB,
        swap_total=0,
        swap_free=0,
        cpu_model="simulated",
        cores_physical=8,
        cores_logical=8,
        simd=("AVX2",),
        arch="x86_64",
        os="Linux",
        board=None,
        models_dir="/models",
        disk_free=GiB,
    )
    choices = recommend(catalog.load(), device, "chat", 4096, 25.0)[:4]
    fast = replace(choices[0].speed, tokens_per_s=12_345_678.0)
    choices[0] = replace(choices[0], speed=fast, installed=True)
    choices[1] = replace(
        choices[1], model=replace(choices[1].model, id="hf.co/" + "x" * 80), reason="r " * 80
    )
    lines = ranking_table(choices, choices[:3])
    long_id = f"2   hf.co/{'x' * 80}:{choices[1].quant}"
    assert_fits(lines, whole=(long_id,))
    assert lines[1].startswith(" 1 ● ") and "12.3M" in lines[1]
    assert f" {long_id}" in lines  # the id whole, to copy, on a line of its own
    late = [*choices[:3], replace(choices[3], installed=True)]
    below = f"also installed, ranked lower: {late[3].id} (#4)"
    assert below in ranking_table(late, late[:2])  # installed, not moved up: said where


def test_the_models_list():
    from edgechat.cli.models import models_table

    rows = [
        {
            "id": "smollm2-135m-instruct:Q4_1",
            "size": 98 << 20,
            "last_used": None,
            "source": "starter package",
        },
        {
            "id": "i" * 70 + ":Q4_K_M",
            "size": 3 * TiB,
            "last_used": 1.7e9,
            "source": "ollama",
            "store_name": "s" * 60,
        },
    ]
    lines = models_table(rows)
    assert_fits(lines)
    assert lines[1].startswith("smollm2-135m-instruct:Q4_1 ") and lines[1].endswith(
        "starter package"
    )
    assert "i" * 70 + ":Q4_K_M" in lines


def test_the_history_list():
    from edgechat.cli.history import history_table

    rows = [
        {"id": 7, "title": "Paris", "updated": 1.7e9, "messages": 2},
        {
            "id": 1234567,
            "title": "a title that goes on " * 10,
            "updated": 1.7e9,
            "messages": 123456,
        },
        {"id": 8, "title": "日本語のタイトル" * 10, "updated": 1.7e9, "messages": 1},
        {"id": 9, "title": "\x1b]0;pwned\x07 escape", "updated": 1.7e9, "messages": 1},
    ]
    lines = history_table(rows)
    assert_fits(lines)
    assert lines[0].endswith("Paris") and "\x1b" not in lines[3]
    assert " 123k msg " in lines[1] and lines[1].endswith("…")


def test_the_quality_table():
    from edgechat.cli.lab import quality_table
    from edgechat.lab.quality import Quality

    q = Quality("m.gguf", "r.gguf", 512, 1, 1, 3.5e9, 1.2, 1234.56789, 0.01, 1.0, None)
    lines = quality_table(q, "notes.txt", ["m.gguf", "r.gguf"])
    assert_fits(lines)
    assert lines[0] == "text      notes.txt: 1 chunk of 512, 1 token scored"
    assert lines[2] == f"{'model':<10}{'3500000000.0':>12}  m.gguf"


def test_the_stores_list(capsys):
    from types import SimpleNamespace

    from edgechat.cli.models import _print_found

    def found(name, size):
        path = f"/home/me/.ollama/models/blobs/{name}"
        return SimpleNamespace(store="ollama", name=name, size=size, path=path, projector=False)

    long = "hf.co/bartowski/" + "x" * 60 + ":Q4_K_M"
    rows = [found("llama3.2:3b", 2 << 30), found(long, 9 * TiB)]
    for r in rows:
        r.usable, r.problem = True, None
    _print_found(rows)
    lines = capsys.readouterr().out.splitlines()
    rest = [line for line in lines if "/blobs/" not in line]  # a path line names the file
    assert_fits(rest, whole=(f"ollama    {long}",))
    assert any(line.startswith("ollama    llama3.2:3b ") for line in lines)
    assert f"ollama    {long}" in lines  # the name whole, to copy
