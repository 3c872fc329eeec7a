"""The quantisation lab: quantise a full-precision model both ways, measure what each
quant costs, and benchmark; on the real starter model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import GREEDY
from support.cli import run_main

from edgechat.errors import EdgechatError
from edgechat.facts.gguf import inspect_file
from edgechat.lab.quality import chunks_of, compare, judge, reference
from edgechat.lab.quantize import dequantize, quantize
from edgechat.llama.engine import Engine
from edgechat.planning.plan import RunPlan

LICENCE = Path(__file__).parent / "data" / "texts" / "gpl-3.0.txt"  # the same text everywhere


@pytest.fixture(scope="module")
def lab(tmp_path_factory, starter_path):
    """An F16 model made from the starter (the gguf package expands every tensor), and
    from it Q8_0 (mixed) and Q4_K_M with both recipes: the quants the tests compare."""
    folder = tmp_path_factory.mktemp("lab")
    f16 = dequantize(starter_path, folder / "smol-f16.gguf")
    out = {"F16": f16}
    for qtype, recipes in (("Q8_0", ("mixed",)), ("Q4_K_M", ("uniform", "mixed"))):
        for recipe in recipes:
            seen = []
            result = quantize(
                f16,
                folder / f"smol-{qtype}-{recipe}.gguf",
                qtype,
                recipe,
                progress=lambda i, n, seen=seen: seen.append((i, n)),
            )
            assert seen and seen[-1][0] == seen[-1][1]  # progress reached the last tensor
            out[f"{qtype}-{recipe}"] = result.path
    return out


@pytest.fixture(scope="module")
def text():
    return LICENCE.read_text()[:4500]  # three chunks of 256 tokens


def test_full_precision_model_is_what_was_asked(lab, starter_path):
    f16 = inspect_file(lab["F16"])
    assert f16.file_type == "F16" and set(f16.quant_mix) <= {"F16", "F32"}
    assert f16.n_params == inspect_file(starter_path).n_params


def test_recipes_differ_where_they_should(lab):
    mixed = inspect_file(lab["Q4_K_M-mixed"])
    uniform = inspect_file(lab["Q4_K_M-uniform"])
    embd = {t.name: t.type_name for t in mixed.tensors}["token_embd.weight"]
    assert embd == "Q8_0"  # mixed keeps the embeddings at 8 bits
    assert {t.name: t.type_name for t in uniform.tensors}["token_embd.weight"] != "Q8_0"
    assert mixed.bits_per_weight > uniform.bits_per_weight
    assert inspect_file(lab["Q8_0-mixed"]).file_type == "Q8_0"


def test_quality_is_ordered_as_expected(lab, text, tmp_path):
    """On three chunks of 256 tokens (the GPL): KL 0.004 < 0.057 < 0.089, top-1 agreement
    96 % > 88 % > 87 %, as on six chunks (0.004 < 0.061 < 0.090; 96 > 87 > 85 %). The
    F16 runs once: each quant is judged against its kept log-probabilities, as shrink
    does (``compare``, which runs both, is the next test's and the quality command's)."""
    with Engine(RunPlan(lab["F16"], n_ctx=256)) as ref:
        kept = reference(ref, chunks_of(ref, text, 256), tmp_path / "ref.npy")
    results = {}
    for name in ("Q8_0-mixed", "Q4_K_M-mixed", "Q4_K_M-uniform"):
        with Engine(RunPlan(lab[name], n_ctx=256)) as model:
            results[name] = judge(model, kept)
            # And the quantised model loads and chats.
            assert model.chat([{"role": "user", "content": "Hi"}], GREEDY).collect()
    q8, q4m, q4u = (results[k] for k in ("Q8_0-mixed", "Q4_K_M-mixed", "Q4_K_M-uniform"))
    assert q8.kl_mean < q4m.kl_mean < q4u.kl_mean
    assert q8.top1_agreement > q4m.top1_agreement > q4u.top1_agreement
    assert abs(q8.ppl_delta_pct) < abs(q4m.ppl_delta_pct)
    assert q8.chunks >= 3 and q8.tokens_scored == q8.chunks * 127


def test_a_model_against_itself(starter_path, text):
    """One chunk proves it: a model against itself agrees on every token."""
    with (
        Engine(RunPlan(starter_path, n_ctx=256)) as a,
        Engine(RunPlan(starter_path, n_ctx=256)) as b,
    ):
        q = compare(a, b, text[:1500], 256)
    assert q.chunks == 1 and q.ppl == pytest.approx(q.ppl_ref)
    assert q.kl_mean == pytest.approx(0, abs=1e-6)
    assert q.top1_agreement == 1.0 and 1 < q.ppl < 200


@pytest.mark.subprocess  # quantising runs in a child process
def test_requantising_is_refused_unless_allowed(lab, tmp_path):
    with pytest.raises(EdgechatError, match="already quantised.*--allow-requantize"):
        quantize(lab["Q8_0-mixed"], tmp_path / "again.gguf", "Q4_K_M")
    warnings = []
    out = quantize(
        lab["Q8_0-mixed"],
        tmp_path / "again.gguf",
        "Q4_0",
        "uniform",
        allow_requantize=True,
        warn=warnings.append,
    )
    assert out.path.exists() and warnings and "worse" in warnings[0]
    assert not list(tmp_path.glob(".*partial"))
    with pytest.raises(EdgechatError, match="unknown type"):
        quantize(lab["F16"], tmp_path / "x.gguf", "Q9_K")
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(lab["F16"].read_bytes()[:4096])
    with pytest.raises(EdgechatError, match="truncated|ends"):
        quantize(truncated, tmp_path / "y.gguf", "Q8_0")
    assert not (tmp_path / "y.gguf").exists()


@pytest.mark.subprocess  # quantising runs in a child process
def test_quality_and_quantize_commands(lab, tmp_path, text, gemma_path):
    doc = tmp_path / "text.txt"
    doc.write_text(text[:3000])  # two chunks: the ordering of quants is the test above
    result = run_main(
        "quality",
        str(lab["Q4_K_M-mixed"]),
        "--ref",
        str(lab["F16"]),
        "--text",
        str(doc),
        "--ctx",
        "256",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    q = json.loads(result.stdout)
    assert q["kl_mean"] > 0 and 0 < q["top1_agreement"] < 1 and "ppl_delta_pct" in q
    assert "chunk" in result.stderr  # progress
    other = run_main("quality", str(lab["F16"]), "--ref", str(gemma_path), "--text", str(doc))
    assert other.returncode == 1 and "different vocabularies" in other.stderr
    made = run_main(
        "quantize", str(lab["F16"]), str(tmp_path / "q.gguf"), "--type", "Q8_0", "--json"
    )
    assert made.returncode == 0 and json.loads(made.stdout)["bits_per_weight"] == pytest.approx(
        8.5, abs=0.1
    )


@pytest.mark.subprocess  # bench measures in a child process
def test_bench_command(starter_path):
    result = run_main(
        "bench", "starter", "--repeat", "2", "--ctx", "512", "--tokens", "16", "--json"
    )
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["runs"] == 2 and row["n_ctx"] == 512 and row["prompt_tokens"] > 64
    assert row["gen_tokens_per_s"] > 0 and row["prompt_tokens_per_s"] > 0
    assert 0 < row["load_s"] < 30 and 0 < row["ttft_s"] < 30
    assert 100 * 2**20 < row["rss_peak"] < 2**30
    text = run_main("bench", "starter", "--repeat", "1", "--ctx", "512", "--tokens", "8")
    assert "tok/s" in text.stdout and "█" in text.stdout


@pytest.mark.subprocess
def test_bench_of_a_broken_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_text("not a model")
    result = run_main("bench", str(bad), "--repeat", "1")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "measuring bad.gguf failed" in result.stderr and "not a GGUF" in result.stderr


@pytest.mark.subprocess
def test_a_ctrl_c_as_the_quantiser_starts_is_not_lost(monkeypatch, tmp_path):
    """Ctrl-C pressed while the child starts stops the work (ignoring SIGINT for that
    time lost it), and the child, in a session of its own, never hears the terminal's."""
    import os
    import signal
    import subprocess

    from edgechat.lab import quantchild

    started = []
    real = subprocess.Popen

    def pressed(*args, **kwargs):
        child = real(*args, **kwargs)
        started.append((child, os.getsid(child.pid)))
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C lands as the child starts
        return child

    monkeypatch.setattr(quantchild.subprocess, "Popen", pressed)
    with pytest.raises(KeyboardInterrupt):
        quantchild.quantise_in_child(tmp_path / "a.gguf", tmp_path / "b", {}, None, None)
    ((child, session),) = started
    assert session == child.pid != os.getsid(0)
    assert child.wait(timeout=30) in (0, -signal.SIGKILL)  # it ends, not left behind
