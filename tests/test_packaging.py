"""install.sh on simulated hosts (dry run), and every doctor check, healthy and broken."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from support.cli import REPO, run_main
from support.devices import simulated_device
from support.filekeyring import keyring_env
from support.hubserver import Hub

from edgechat import doctor
from edgechat.facts.device import GPU, Device, GiB
from edgechat.paths import paths

INSTALL = REPO / "packaging" / "install.sh"
STUB = "#!/bin/sh\nexit 0\n"


def host(tmp_path, *, uname=("Linux", "x86_64"), tools=(), files=None) -> dict:
    """A simulated host: a sysroot with the given files and a PATH with stub tools."""
    root = tmp_path / "root"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools:
        (bin_dir / tool).write_text(STUB)
        (bin_dir / tool).chmod(0o755)
    for name, text in (files or {}).items():
        path = root / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "PYTHON": sys.executable,
        "EDGECHAT_SYSROOT": str(root),
        "EDGECHAT_UNAME_S": uname[0],
        "EDGECHAT_UNAME_M": uname[1],
    }


def dry_run(env: dict, *args: str) -> str:
    result = subprocess.run(
        ["bash", str(INSTALL), "--dry-run", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


DEBIAN = {"/etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'}
PI_OS = {
    "/etc/os-release": 'PRETTY_NAME="Raspbian GNU/Linux 12 (bookworm)"\n',
    "/proc/device-tree/model": "Raspberry Pi 4 Model B Rev 1.4\x00",
}


SAPPHIRE_RAPIDS = {
    **DEBIAN,
    "/proc/cpuinfo": "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma f16c bmi2 avx_vnni "
    "avx512f avx512vbmi avx512_vnni avx512_bf16 avx512_fp16 amx_int8 amx_tile\n",
}
AVX2_ONLY = {**DEBIAN, "/proc/cpuinfo": "flags\t\t: fpu sse2 avx avx2 fma f16c bmi2\n"}


@pytest.mark.parametrize(
    "name, uname, tools, files, backend, flags",
    [
        ("plain x86", ("Linux", "x86_64"), (), DEBIAN, "cpu", "(none: plain CPU build)"),
        ("AVX2 x86", ("Linux", "x86_64"), (), AVX2_ONLY, "cpu", "(none: plain CPU build)"),
        (
            # -march=native would bring AVX512-FP16 (flash attention at two thirds of
            # the speed deep in a chat) and the AMX kernels (a crash): features by name.
            "Xeon with AVX512-FP16",
            ("Linux", "x86_64"),
            (),
            SAPPHIRE_RAPIDS,
            "cpu",
            "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
            "-DGGML_BMI2=ON -DGGML_AVX_VNNI=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON "
            "-DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON\n",
        ),
        (
            "NVIDIA",
            ("Linux", "x86_64"),
            ("nvcc",),
            {**DEBIAN, "/dev/nvidia0": ""},
            "cuda",
            "-DGGML_CUDA=on",
        ),
        ("nvcc, no GPU", ("Linux", "x86_64"), ("nvcc",), DEBIAN, "cpu", "(none"),
        ("Apple Silicon", ("Darwin", "arm64"), (), {}, "metal", "-DGGML_METAL=on"),
        (
            "Vulkan",
            ("Linux", "x86_64"),
            ("glslc", "vulkaninfo"),
            DEBIAN,
            "vulkan",
            "-DGGML_VULKAN=on",
        ),
        (
            "OpenBLAS",
            ("Linux", "x86_64"),
            (),
            {**DEBIAN, "/usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h": ""},
            "openblas",
            "-DGGML_BLAS=on -DGGML_BLAS_VENDOR=OpenBLAS",
        ),
        ("Raspberry Pi 4", ("Linux", "aarch64"), (), PI_OS, "cpu", "-DGGML_NATIVE=on"),
        (
            "Raspberry Pi 5",
            ("Linux", "aarch64"),
            (),
            {**PI_OS, "/proc/device-tree/model": "Raspberry Pi 5 Model B Rev 1.0\x00"},
            "cpu",
            "-DGGML_NATIVE=on -DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16",
        ),
    ],
)
@pytest.mark.subprocess
def test_install_picks_the_build_for_the_host(tmp_path, name, uname, tools, files, backend, flags):
    out = dry_run(host(tmp_path, uname=uname, tools=tools, files=files))
    assert f"llama.cpp backend: {backend}\n" in out
    assert f"CMAKE_ARGS={flags}" in out
    assert "would run:" in out and "+ " not in out  # a dry run runs nothing
    assert not (tmp_path / "home").exists()


@pytest.mark.subprocess
def test_install_cpu_flag_and_rerun(tmp_path):
    env = host(tmp_path, tools=("nvcc",), files={**DEBIAN, "/dev/nvidia0": ""})
    assert "llama.cpp backend: cpu" in dry_run(env, "--cpu")
    # A second run reuses the environment and rebuilds llama.cpp only if the flags changed.
    prefix = tmp_path / "prefix"
    (prefix / "venv" / "bin").mkdir(parents=True)
    (prefix / "venv" / "bin" / "python").write_text(STUB)
    (prefix / "venv" / "bin" / "python").chmod(0o755)
    (prefix / "llama-cmake-args").write_text("-DGGML_CUDA=on")
    again = dry_run(env, "--prefix", str(prefix))
    assert f"reusing {prefix}/venv" in again and "--force-reinstall" not in again
    changed = dry_run(env, "--prefix", str(prefix), "--cpu")
    assert "--force-reinstall" in changed


@pytest.mark.subprocess
def test_install_uses_pipx_when_present(tmp_path):
    out = dry_run(host(tmp_path, tools=("pipx",), files=DEBIAN))
    assert "environment: pipx" in out and "pipx install --force edgechat[starter]" in out


@pytest.mark.subprocess
def test_install_refuses_old_python_with_the_fix(tmp_path):
    env = host(tmp_path, files=DEBIAN)
    old = tmp_path / "bin" / "python-old"
    old.write_text("#!/bin/sh\nexit 1\n")
    old.chmod(0o755)
    env["PYTHON"] = str(old)
    result = subprocess.run(
        ["bash", str(INSTALL), "--dry-run"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 1 and "needs Python 3.10" in result.stderr


# -- doctor ----------------------------------------------------------------------------------


def device(**changes) -> Device:
    return simulated_device(simd=("AVX2",), **changes)


def test_doctor_llama_build():
    assert doctor.check_llama(device()).status == doctor.OK
    nvidia = GPU("nvidia", "NVIDIA GeForce RTX 4060", 8 * GiB, 8 * GiB)
    idle = doctor.check_llama(device(gpus=(nvidia,)))
    assert idle.status == doctor.FAIL and "sits idle" in idle.detail
    assert 'CMAKE_ARGS="-DGGML_CUDA=on"' in idle.fix and "--force-reinstall" in idle.fix
    good = doctor.check_llama(
        device(gpus=(nvidia,), llama_backends=("cuda", "cpu"), gpu_offload=True)
    )
    assert good.status == doctor.OK
    apple = GPU("apple", "Apple M2", 16 * GiB, None, unified=True)
    assert "-DGGML_METAL=on" in doctor.check_llama(device(gpus=(apple,))).fix
    missing = doctor.check_llama(device(llama_backends=(), gpu_offload=None))
    assert missing.status == doctor.FAIL and "pip install" in missing.fix


def test_doctor_names_a_native_build_on_an_avx512_fp16_cpu():
    """A native build (its AMX kernels give it away) on a CPU with AVX512-FP16 writes at
    two thirds of the speed deep in a chat: doctor says so, with the build that does not."""
    simd = ("AVX", "AVX2", "FMA", "F16C", "AVX512", "AVX512_FP16", "AMX_INT8")
    xeon = simulated_device(simd=simd)
    check = doctor.check_build_flags(xeon, ("AMX", "CPU_REPACK"))
    assert check.status == doctor.WARN and "AVX512-FP16" in check.detail
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON' in check.fix
    assert "-DGGML_AVX512=ON" in check.fix and "AMX" not in check.fix
    assert doctor.check_build_flags(xeon, ("CPU_REPACK",)) is None  # built by name already
    assert doctor.check_build_flags(device(), ("AMX",)) is None


def test_doctor_keyring(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    import keyring.core

    keyring.core.init_backend()
    none = doctor.check_keyring()
    assert none.status == doctor.WARN and "HF_TOKEN" in none.detail and none.fix
    for name, value in keyring_env(tmp_path / "k.json").items():
        monkeypatch.setenv(name, value)
    keyring.core.init_backend()
    try:
        assert doctor.check_keyring().status == doctor.OK
    finally:
        monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
        keyring.core.init_backend()


def test_doctor_disk():
    assert doctor.check_disk(device()).status == doctor.OK
    low = doctor.check_disk(device(disk_free=1 * GiB))
    assert low.status == doctor.FAIL and "HF_HOME" in low.fix
    assert doctor.check_disk(device(disk_free=5 * GiB)).status == doctor.WARN


def test_doctor_paths(edgechat_home):
    run_main("config", "set", "ctx", "2048")
    p = paths()
    assert all(c.status == doctor.OK for c in doctor.check_paths(p))
    p.config_file.chmod(0o644)
    loose = [c for c in doctor.check_paths(p) if c.name == "private files"][0]
    assert loose.status == doctor.FAIL and loose.fix == f"chmod 600 {p.config_file}"
    p.config_file.chmod(0o600)
    if p.cache_dir.exists():
        shutil.rmtree(p.cache_dir)
    p.cache_dir.write_text("not a folder")
    broken = [c for c in doctor.check_paths(p) if c.name == "cache dir"][0]
    assert broken.status == doctor.FAIL and "is a file" in broken.detail


def test_doctor_hub(starter_path):
    with Hub({"HuggingFaceTB/SmolLM2-135M-Instruct-GGUF": {"x.gguf": b"x"}}) as server:
        assert doctor.check_hub(server.url).status == doctor.OK
    down = doctor.check_hub("http://127.0.0.1:9", timeout=2)
    assert down.status == doctor.WARN and "work offline" in down.detail and down.fix


def test_doctor_command_json(edgechat_home):
    result = run_main("doctor", "--json", env={"HF_ENDPOINT": "http://127.0.0.1:9"})
    checks = json.loads(result.stdout)
    names = {c["name"] for c in checks}
    assert {"llama.cpp", "keyring", "disk", "config dir", "private files", "hub"} <= names
    failing = [c for c in checks if c["status"] == "fail"]
    assert result.returncode == (1 if failing else 0)
    text = run_main("doctor", env={"HF_ENDPOINT": "http://127.0.0.1:9"})
    assert "fix:" in text.stdout and "hub" in text.stdout


def test_desktop_entry_and_release_files():
    entry = (REPO / "packaging" / "edgechat.desktop").read_text()
    assert "Exec=edgechat" in entry and "Terminal=true" in entry and "Type=Application" in entry
    assert "Apache License" in (REPO / "LICENSE").read_text()
    assert "## [0.1.0]" in (REPO / "CHANGELOG.md").read_text()
    notice = (REPO / "edgechat" / "licenses" / "SmolLM2-135M-Instruct.txt").read_text()
    assert "Apache" in notice and "HuggingFaceTB" in notice
    from edgechat import __version__

    assert __version__ in (REPO / "CHANGELOG.md").read_text()
    assert os.path.exists(REPO / "packaging" / "edgechat.spec")


def test_ci_runs_the_readme_test_line_in_tiers():
    """CI runs exactly the README's test line: ruff, the fast tier, then the rest."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("Install and run the whole test suite", 1)[1].split("```sh\n", 1)[1]
    line = block.split("\n", 1)[0]
    assert line in (REPO / ".ci" / "run").read_text().splitlines()
    fast = "pytest -m 'not model and not subprocess and not tmux'"
    rest = "pytest -m 'model or subprocess or tmux'"
    assert "ruff check" in line and line.index(fast) < line.index(rest)
