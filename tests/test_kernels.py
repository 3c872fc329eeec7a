"""llama.cpp's extra CPU kernels (AMX, repacked weights) are checked in a child process
before a model runs on them, and a kernel that crashes, hangs or computes wrong numbers is
left out, once, with one line; the verdict is remembered per build and CPU, and a setting
forces a choice (issue 29). A broken kernel is injected with EDGECHAT_TEST_KERNEL_FAULT,
so this runs on any CPU; on an AMX Xeon the real AMX path is checked too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.cli import run_cli, run_main

from edgechat.facts import kernels
from edgechat.llama import backend, cpubuffers, kernelcheck
from edgechat.llama.engine import Engine
from edgechat.planning.plan import RunPlan, Sampling

HAS_AMX = (
    "amx_int8" in Path("/proc/cpuinfo").read_text(errors="replace")
    if Path("/proc/cpuinfo").exists()
    else False
)


def _available() -> tuple[str, ...]:
    return cpubuffers.names(backend.load())


def _fresh_home() -> None:
    """No verdict yet, as on a machine that never loaded a model."""
    kernels.store_path().unlink(missing_ok=True)


def _reply(engine) -> str:
    sampling = Sampling(temperature=0, max_tokens=8)
    return engine.chat([{"role": "user", "content": "Hi"}], sampling).collect()


# -- the choice, on recorded figures ----------------------------------------------------


def _ok(prompt: float, gen: float) -> kernels.Result:
    return kernels.Result(True, "", prompt, gen)


def test_auto_keeps_amx_where_it_works_and_is_faster():
    runs = {"": _ok(400, 70), "AMX": _ok(900, 90), "CPU_REPACK": _ok(600, 80)}
    runs["AMX+CPU_REPACK"] = _ok(1000, 95)
    v = kernels.Verdict("k", "2026-12-07", (kernels.AMX, kernels.REPACK), runs)
    chosen = kernels.choose("auto", v.available, v)
    assert chosen.names == ("AMX", "CPU_REPACK") and chosen.warning is None


def test_auto_leaves_out_amx_where_it_works_but_is_slower():
    # Ollama measured AMX 8.6 % slower on Sapphire Rapids: the faster set wins.
    runs = {"": _ok(400, 70), "AMX": _ok(500, 60), "CPU_REPACK": _ok(600, 80)}
    runs["AMX+CPU_REPACK"] = _ok(550, 73)
    v = kernels.Verdict("k", "2026-12-07", (kernels.AMX, kernels.REPACK), runs)
    chosen = kernels.choose("auto", v.available, v)
    assert chosen.names == ("CPU_REPACK",)
    assert "AMX skipped: slower in a check on 2026-12-07" in chosen.why


def test_auto_keeps_llama_cpps_own_choice_within_the_noise():
    runs = {"": _ok(400, 70), "AMX": _ok(600, 80), "CPU_REPACK": _ok(600, 80)}
    runs["AMX+CPU_REPACK"] = _ok(600, 80 / 1.02)  # 2 % slower: noise, not a verdict
    v = kernels.Verdict("k", "2026-12-07", (kernels.AMX, kernels.REPACK), runs)
    assert kernels.choose("auto", v.available, v).names == ("AMX", "CPU_REPACK")


def test_a_crashed_kernel_is_skipped_and_forcing_it_warns():
    runs = {"": _ok(400, 70), "AMX": kernels.Result(False, "crashed (SIGSEGV)")}
    runs["CPU_REPACK"] = _ok(600, 80)
    v = kernels.Verdict("k", "2026-12-07", (kernels.AMX, kernels.REPACK), runs)
    auto = kernels.choose("auto", v.available, v)
    assert auto.names == ("CPU_REPACK",)
    assert auto.why == "AMX skipped: it crashed (SIGSEGV) in a check on 2026-12-07"
    forced = kernels.choose("amx", v.available, v)
    assert forced.names == ("AMX", "CPU_REPACK")
    assert "crashed (SIGSEGV) in a check on 2026-12-07; using it anyway" in forced.warning
    assert kernels.choose("plain", v.available, v).names == ()
    assert kernels.choose("repack", v.available, v).names == ("CPU_REPACK",)
    missing = kernels.choose("amx", ("CPU_REPACK",), None)
    assert missing.names == ("CPU_REPACK",) and "no AMX kernels" in missing.warning


def test_a_damaged_store_means_checking_again(edgechat_home):
    path = kernels.store_path()
    for junk in ("{", "[]", json.dumps({kernels.key(): {"runs": 5}}), "\x00" * 10):
        path.write_text(junk)
        assert kernels.remembered() is None


def test_device_and_doctor_name_the_kernels_and_the_way_to_check_again(capsys, edgechat_home):
    runs = {"": _ok(400, 70), "AMX": kernels.Result(False, "crashed (SIGSEGV)")}
    runs["CPU_REPACK"] = _ok(600, 80)
    kernels.remember(kernels.Verdict(kernels.key(), "2026-12-07", ("AMX", "CPU_REPACK"), runs))
    out = run_main("device").stdout
    assert "kernels    repacked weights (AMX skipped: it crashed (SIGSEGV) in a check on" in out
    checks = json.loads(
        run_main("doctor", "--json", env={"HF_ENDPOINT": "http://127.0.0.1:9"}).stdout
    )
    check = next(c for c in checks if c["name"] == "cpu kernels")
    assert check["status"] == "warn" and "AMX skipped" in check["detail"]
    assert check["fix"].startswith("edgechat doctor --check-kernels")
    run_main("config", "set", "cpu_kernels", "plain")
    assert (
        "kernels    plain kernels (plain kernels, as cpu_kernels = plain asks)"
        in run_main("device").stdout
    )
    bad = run_main("config", "set", "cpu_kernels", "fast")
    assert bad.returncode == 1 and "auto, amx, repack, plain" in bad.stderr


# -- the check itself, in a child process ------------------------------------------------


@pytest.mark.subprocess
def test_a_kernel_that_crashes_is_left_out_once_with_one_line(starter_path, monkeypatch):
    available = _available()
    if kernels.REPACK not in available:
        pytest.skip("this llama.cpp build has no repacked CPU kernels to break")
    _fresh_home()
    monkeypatch.setenv("EDGECHAT_TEST_KERNEL_FAULT", "CPU_REPACK:crash")
    said: list[str] = []
    with Engine(RunPlan(starter_path, n_ctx=512), say=said.append) as engine:
        assert kernels.REPACK not in engine.kernels.names
        assert _reply(engine)  # the model still answers, on what passed
        assert engine.info()["cpu_kernels_why"].startswith(
            ("AMX skipped", "repacked weights skipped")
        )
    assert len(said) == 1 and "crashed (SIGSEGV) in a check on this CPU" in said[0], said
    verdict = kernels.remembered()
    assert verdict.result(("CPU_REPACK",)).why == "crashed (SIGSEGV)"
    assert verdict.result(()).ok  # the plain kernels, the reference, ran right

    def no_child(*args, **kwargs):
        raise AssertionError("the verdict is remembered: no second check")

    monkeypatch.setattr(kernelcheck, "_run_child", no_child)
    said.clear()
    with Engine(RunPlan(starter_path, n_ctx=512), say=said.append) as engine:
        assert kernels.REPACK not in engine.kernels.names
    assert said == []  # said once, when the check found it
    # Forced by the setting, against the verdict: loaded as asked, with a warning.
    with Engine(RunPlan(starter_path, n_ctx=512, cpu_kernels="repack"), say=said.append) as e:
        assert e.kernels.names == ("CPU_REPACK",)
    assert len(said) == 1 and "using it anyway" in said[0]


@pytest.mark.subprocess
def test_a_kernel_that_computes_wrong_numbers_or_hangs_is_left_out(monkeypatch):
    available = _available()
    if kernels.REPACK not in available:
        pytest.skip("this llama.cpp build has no repacked CPU kernels to break")
    monkeypatch.setenv("EDGECHAT_TEST_KERNEL_FAULT", "CPU_REPACK:wrong")
    verdict = kernelcheck.check(("CPU_REPACK",))
    assert verdict.result(("CPU_REPACK",)).why.startswith("computed wrong numbers (off by")
    assert kernels.choose("auto", verdict.available, verdict).names in ((), ("AMX",))
    monkeypatch.setenv("EDGECHAT_TEST_KERNEL_FAULT", "CPU_REPACK:hang")
    monkeypatch.setattr(kernelcheck, "TIMEOUT_S", 8)
    verdict = kernelcheck.check(("CPU_REPACK",))
    assert verdict.result(("CPU_REPACK",)).why == "hung (no answer in 8 s)"


@pytest.mark.subprocess
def test_the_check_runs_again_on_asking_and_says_its_choice(edgechat_home):
    result = run_cli("doctor", "--check-kernels", env={"HF_ENDPOINT": "http://127.0.0.1:9"})
    assert "auto uses " in result.stderr and "Traceback" not in result.stderr
    assert kernels.remembered() is not None


@pytest.mark.subprocess
@pytest.mark.skipif(not HAS_AMX, reason="the real AMX path needs an Intel CPU with AMX")
def test_on_an_amx_cpu_a_fresh_install_answers(starter_path, tmp_path):
    """The README's own install, native build, first prompt: it used to segfault (exit 139)
    here. From a home with no verdict, the check runs and the chat answers."""
    _fresh_home()
    result = run_cli("chat", "--plain", "--max-tokens", "8", "What is the capital of France?")
    assert result.returncode == 0 and result.stdout.strip(), result.stderr
    verdict = kernels.remembered()
    assert set(verdict.available) >= {"AMX"}
    chosen = kernels.choose("auto", verdict.available, verdict)
    amx = verdict.result(("AMX",))
    assert ("AMX" in chosen.names) == (amx.ok and "AMX" in verdict.fastest(verdict.available))
    if not amx.ok:  # said once on stderr, in one line
        assert result.stderr.count("AMX kernels") == 1
