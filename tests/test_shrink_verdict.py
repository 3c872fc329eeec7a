"""`shrink`'s decisions without a model: the budgets, the pick over recorded figures, the
candidates, the text split, the ETA and the picture."""

from __future__ import annotations

import pytest

from edgechat.errors import InputError
from edgechat.lab.clock import Clock, Stage
from edgechat.lab.split import needed_tokens, split
from edgechat.lab.verdict import Candidate, candidate_ids, pick
from edgechat.planning.budget import DEFAULTS, Figures, parse

MB = 1024**2

# llama.cpp's published figures for Llama-3-8B on wikitext (mean KLD, 99th percentile,
# PPL ratio, top-1), with the sizes of its files: the shape of a real run.
LLAMA3 = {
    "Q8_0": (8540, Figures(0.0009, 0.009, 1.0005, 0.991)),
    "Q6_K": (6600, Figures(0.0044, 0.043, 1.0033, 0.979)),
    "Q5_K_M": (5730, Figures(0.0117, 0.12, 1.0099, 0.966)),
    "Q4_K_M": (4920, Figures(0.0336, 0.35, 1.0306, 0.945)),
    "Q4_K_M+imatrix": (4920, Figures(0.0290, 0.30, 1.026, 0.950)),
    "Q3_K_M": (4020, Figures(0.1019, 1.1, 1.09, 0.905)),
    "Q3_K_M+imatrix": (4020, Figures(0.0844, 0.9, 1.075, 0.915)),
    "Q2_K": (3180, Figures(0.4451, 4.0, 1.45, 0.80)),
}


def recorded(fits=lambda cid: True, **only) -> list[Candidate]:
    out = []
    for cid, (mb, figures) in LLAMA3.items():
        out.append(
            Candidate(
                id=cid,
                type=cid.split("+")[0],
                imatrix=cid.endswith("+imatrix"),
                size=mb * MB + (1 if cid.endswith("+imatrix") else 0),
                bits_per_weight=mb * 8 / 8030,
                figures=figures,
                fits=fits(cid),
                fit_label="comfortable" if fits(cid) else "does not fit",
                fit_why="" if fits(cid) else "needs 9 GiB of RAM; 6 GiB is available",
            )
        )
    return out


def test_chat_picks_the_smallest_quant_within_its_budget():
    verdict = pick(recorded(), DEFAULTS["chat"])
    # Q3_K_M misses the chat budget even with a matrix (KLD 0.084 > 0.06): Q4_K_M holds.
    assert verdict.pick == "Q4_K_M"
    assert "Q4_K_M is the smallest" in verdict.why
    assert verdict.misses["Q3_K_M+imatrix"] and not verdict.misses["Q4_K_M+imatrix"]


def test_a_tie_in_size_goes_to_the_lower_kld():
    same = [c if c.id != "Q4_K_M+imatrix" else c for c in recorded()]
    same = [
        Candidate(**{**c.__dict__, "size": 4920 * MB}) if c.id.startswith("Q4_K_M") else c
        for c in same
    ]
    assert pick(same, DEFAULTS["chat"]).pick == "Q4_K_M+imatrix"


def test_code_and_maths_are_stricter():
    for task in ("code", "math"):
        verdict = pick(recorded(), DEFAULTS[task])
        assert verdict.pick == "Q5_K_M"  # 4-bit misses: KLD 0.029 > 0.015
        assert "the next smaller, Q4_K_M+imatrix, misses it: mean KLD" in verdict.why


def test_a_custom_budget_moves_the_pick():
    looser = parse("kld=0.2,p99=off,ppl=off,top1=0.91", "chat")
    verdict = pick(recorded(), looser)
    assert verdict.pick == "Q3_K_M+imatrix"  # the matrix makes the difference, and it says so
    assert "; without the matrix it misses: top-1 90.5% < 91%" in verdict.why
    assert pick(recorded(), parse("top1=99%", "code")).pick == "Q8_0"


def test_what_does_not_fit_is_never_picked():
    verdict = pick(recorded(fits=lambda cid: cid.startswith(("Q2", "Q3"))), DEFAULTS["chat"])
    assert verdict.pick is None
    assert "meets the chat budget but does not fit this machine" in verdict.why
    verdict = pick(recorded(fits=lambda cid: cid != "Q5_K_M"), DEFAULTS["code"])
    assert verdict.pick == "Q6_K"


def test_nothing_within_the_budget_names_the_closest():
    verdict = pick(recorded(), parse("kld=0.0001", "code"), source="the source (F16)")
    assert verdict.pick is None
    assert "the closest, Q8_0, misses it: mean KLD 0.0009 > 0.0001" in verdict.why
    assert "Keep the source (F16)" in verdict.why
    unmeasured = [Candidate(**{**c.__dict__, "figures": None}) for c in recorded()]
    assert pick(unmeasured, DEFAULTS["chat"]).pick is None


def test_budget_parsing_and_its_one_line_errors():
    b = parse("kld=0.05,top1=90%", "code")
    assert (b.kl_mean, b.top1, b.custom) == (0.05, 0.9, True)
    assert b.kl_p99 == DEFAULTS["code"].kl_p99  # the rest stays the task's
    assert parse("ppl=5%").ppl_ratio == pytest.approx(1.05)
    assert parse("p99=off").kl_p99 is None
    assert "top-1 >= 90%" in DEFAULTS["chat"].describe()
    for text, words in (
        ("foo=1", "'foo' is not a measure: use kld, p99, ppl or top1"),
        ("kld", "has no value"),
        ("kld=abc", "is not a number"),
        ("kld=-1", "a number above 0"),
        ("top1=1.5", "between 0 and 1"),
        ("ppl=0.9", "1 or more"),
        (" , ", "the budget is empty"),
        ("kld=nan", "not a finite number"),
    ):
        with pytest.raises(ValueError, match=words) as err:
            parse(text)
        assert "\n" not in str(err.value)


def test_budget_failures_in_words():
    code = DEFAULTS["code"]
    assert code.failures(Figures(0.03, 0.3, 1.03, 0.94)) == [
        "mean KLD 0.03 > 0.015",
        "KLD p99 0.3 > 0.15",
        "PPL ratio 1.03 > 1.015",
        "top-1 94% < 96%",
    ]
    assert code.failures(Figures(0.01, None, 1.0, 0.99)) == ["KLD p99 not measured"]


def test_candidates_with_and_without_the_matrix():
    ids = candidate_ids(["Q8_0", "Q4_K_M", "IQ2_XS"], needs_matrix=frozenset({"IQ2_XS"}))
    assert ids == [
        ("Q8_0", "Q8_0", False),  # 8-bit quantisation ignores a matrix: one candidate
        ("Q4_K_M", "Q4_K_M", False),
        ("Q4_K_M+imatrix", "Q4_K_M", True),
        ("IQ2_XS+imatrix", "IQ2_XS", True),  # refused without one: only with
    ]


def words(text: str) -> int:
    return len(text.split())


def test_the_split_is_deterministic_and_keeps_the_parts_apart():
    lines = [f"line {i} of the text says something different {i * 7}" for i in range(400)]
    text = "\n".join(lines) + "\n"
    one, two = split(text, words, 64), split(text, words, 64)
    assert one == two
    held, calib = set(one.held_out.splitlines()), set(one.calibration.splitlines())
    assert held and calib and not held & calib  # never scored on what it calibrated on
    assert held | calib == set(lines)
    assert one.held == tuple(range(2, one.stretches, 3))  # every third stretch
    assert words(one.held_out) >= 64 and words(one.calibration) >= 64
    assert 0.2 < len(one.held_out) / len(text) < 0.45


def test_a_short_text_is_refused_in_one_line():
    with pytest.raises(InputError, match=r"notes.txt is 20 tokens; at least 160 are needed") as e:
        split("word " * 20, words, 64, "notes.txt")
    assert "smaller --ctx" in str(e.value) and "\n" not in str(e.value)
    text = "w " * needed_tokens(64)  # just enough: two stretches, the last held out
    parts = split(text, words, 64)
    assert parts.held == (parts.stretches - 1,)


def test_the_eta_learns_from_the_run(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("edgechat.lab.clock.time.monotonic", lambda: now[0])
    stages = [Stage("ref", "source", 10), Stage("q", "quantize", 1), Stage("s", "source", 5)]
    clock = Clock(stages, {"source": 1.0, "quantize": 30.0})
    assert clock.eta() == 45.0
    clock.start(0)
    now[0] = 4.0
    clock.advance(2, 10)  # 2 chunks in 4 s: 2 s a chunk, not the guessed 1
    assert clock.eta() == pytest.approx(16 + 30 + 10)
    now[0] = 20.0
    clock.finish()
    assert clock.eta() == pytest.approx(30 + 10)


def test_the_picture_fits_80_columns():
    from edgechat.cli.picture import PICK, quality_vs_size

    points = [(c.id, c.size, c.figures.kl_mean) for c in recorded()]
    lines = quality_vs_size(points, budget=0.06, pick="Q4_K_M")
    assert all(len(line) <= 80 for line in lines)
    body = "\n".join(lines)
    assert f"{PICK} Q4_K_M" in body and "- - the budget" in body
    plot = [line.split("|", 1)[1] for line in lines if "|" in line]
    assert sum(row.count(PICK) for row in plot) == 1
    assert sum(sum(ch.isalpha() for ch in row) for row in plot) == len(points) - 1
    assert quality_vs_size([("Q8_0", 100, 0.0)], None, None)  # one point, a zero KLD
