"""`edgechat doctor`: what is wrong with this install, and the exact command that fixes it."""

from __future__ import annotations

import os
import shlex
import stat
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from edgechat.facts.device import Device, GiB, format_size
from edgechat.paths import Paths, folder_problem, shown

OK, WARN, FAIL = "ok", "warn", "fail"
LLAMA_SPEC = "llama-cpp-python>=0.3.36,<0.4"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def reinstall_llama(cmake_args: str) -> str:
    """The pip line that rebuilds llama-cpp-python for a backend, in this environment."""
    pip = f"{shlex.quote(sys.executable)} -m pip"
    return (
        f'CMAKE_ARGS="{cmake_args}" {pip} install --force-reinstall --no-cache-dir "{LLAMA_SPEC}"'
    )


_GPU_FLAGS = {
    "nvidia": ("cuda", "-DGGML_CUDA=on"),
    "apple": ("metal", "-DGGML_METAL=on"),
    "amd": ("hip", "-DGGML_HIP=on"),
}


# llama.cpp's x86 build options, named as the CPU features (facts/cpuinfo.py) they need:
# packaging/install.sh names the same ones on a CPU with AVX512-FP16.
_X86_OPTIONS = (
    "AVX", "AVX2", "FMA", "F16C", "BMI2", "AVX_VNNI",
    "AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16",
)  # fmt: skip


def named_x86_build(simd: tuple[str, ...]) -> str:
    """CMAKE_ARGS for llama.cpp built for these features by name, not -march=native."""
    return " ".join(["-DGGML_NATIVE=OFF", *(f"-DGGML_{o}=ON" for o in _X86_OPTIONS if o in simd)])


def check_build_flags(device: Device, kernels_built: tuple[str, ...]) -> Check | None:
    """A native build (-march=native: its AMX kernels give it away) on a CPU with
    AVX512-FP16: flash attention writes at two thirds of the speed deep in a chat (34.9
    against 54.9 tok/s 1,500 tokens in, SmolLM2, two cores). None where it does not apply."""
    if "AVX512_FP16" not in device.simd or "AMX" not in kernels_built:
        return None
    return Check(
        "llama.cpp flags",
        WARN,
        "built with -march=native on a CPU with AVX512-FP16: flash attention runs at about "
        "two thirds of its speed deep in a chat (and the AMX kernels are compiled in)",
        reinstall_llama(named_x86_build(device.simd)),
    )


def check_llama(device: Device) -> Check:
    if not device.llama_backends:
        return Check(
            "llama.cpp",
            FAIL,
            "llama-cpp-python is not installed",
            f'{shlex.quote(sys.executable)} -m pip install "{LLAMA_SPEC}"',
        )
    built = ", ".join(device.llama_backends)
    gpu = device.gpus[0] if device.gpus else None
    if gpu is None:
        if device.gpu_offload:
            return Check(
                "llama.cpp",
                WARN,
                f"built for {built}, but no GPU was found: it will run on the CPU",
                None,
            )
        return Check("llama.cpp", OK, f"built for {built}; no GPU here, CPU it is")
    backend, flags = _GPU_FLAGS.get(gpu.vendor, ("vulkan", "-DGGML_VULKAN=on"))
    if backend not in device.llama_backends:
        return Check(
            "llama.cpp",
            FAIL,
            f"{gpu.name} found, but this llama.cpp is built for {built}: the GPU sits idle",
            reinstall_llama(flags),
        )
    return Check("llama.cpp", OK, f"built for {built}; offloads to {gpu.name}")


def check_keyring() -> Check:
    from edgechat.models.credentials import keyring_backend

    backend = keyring_backend()
    if backend is None:
        return Check(
            "keyring",
            WARN,
            "no system keyring: `edgechat login` keeps the token in huggingface_hub's token "
            "file (0600), or set HF_TOKEN",
            "sudo apt install gnome-keyring   # or: export HF_TOKEN=... in your shell profile",
        )
    return Check("keyring", OK, f"tokens go to {type(backend).__module__}.{type(backend).__name__}")


def check_disk(device: Device, warn_below: int = 10 * GiB, fail_below: int = 2 * GiB) -> Check:
    free = device.disk_free
    where = device.models_dir
    if free is None:
        return Check("disk", WARN, f"cannot tell the free space at {where}", None)
    detail = f"{format_size(free)} free at {where}"
    fix = (
        "free some space there, or put models on a bigger disk: export "
        "HF_HOME=/path/on/bigger/disk/huggingface"
    )
    if free < fail_below:
        return Check("disk", FAIL, detail + ": too little for any but the smallest models", fix)
    if free < warn_below:
        return Check("disk", WARN, detail + ": enough for small models only", fix)
    return Check("disk", OK, detail)


def _fix(folder: Path) -> str:
    """The command that makes ``folder`` usable: EDGECHAT_HOME elsewhere when it is the
    home that is wrong, else the file in the way moved aside, else the owner changed."""
    home = os.environ.get("EDGECHAT_HOME")
    if home and Path(home).expanduser() in (folder, *folder.parents):
        return "unset EDGECHAT_HOME   # or point it at a folder you can write"
    blocker = next(q for q in (folder, *folder.parents) if os.path.lexists(q))  # "/" is
    quoted = shlex.quote(str(blocker))
    if not os.path.isdir(blocker):
        return f"mv {quoted} {quoted}.bak"
    return f"sudo chown -R $USER {quoted}"


def _mode(path: Path) -> int:
    """A regular file's mode bits, 0 for anything else or what cannot be asked (a name
    too long, a loop)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return 0
    return st.st_mode if stat.S_ISREG(st.st_mode) else 0


def check_paths(p: Paths, token_file: Path | None = None) -> list[Check]:
    checks = []
    for label, folder in (
        ("config dir", p.config_dir),
        ("data dir", p.data_dir),
        ("cache dir", p.cache_dir),
    ):
        problem = folder_problem(folder)  # tried, so root, /proc and read-only disks count
        if problem is None:
            checks.append(Check(label, OK, str(folder)))
        else:
            why = f"{shown(folder)} cannot be used: {problem}"
            checks.append(Check(label, FAIL, why, _fix(folder)))
    private = [p.config_file, p.data_dir / "conversations.db", p.data_dir / "models.json"]
    if token_file is not None:
        private.append(token_file)
    loose = [f for f in private if _mode(f) & (stat.S_IRWXG | stat.S_IRWXO)]
    if loose:
        names = " ".join(shlex.quote(str(f)) for f in loose)
        checks.append(
            Check(
                "private files",
                FAIL,
                f"readable by others: {', '.join(map(str, loose))}",
                f"chmod 600 {names}",
            )
        )
    else:
        checks.append(Check("private files", OK, "settings, chats and tokens are 0600"))
    return checks


def check_hub(endpoint: str, timeout: float = 3.0) -> Check:
    url = endpoint.rstrip("/") + "/api/models/HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
    started = time.monotonic()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            pass
    except urllib.error.HTTPError as e:  # it answered: reachable
        if e.code >= 500:
            return Check("hub", WARN, f"{endpoint} answered {e.code}", "try again later")
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        return Check(
            "hub",
            WARN,
            f"cannot reach {endpoint} ({reason}): pulls will fail; chat, summarise and "
            "installed models work offline",
            "check the network or proxy (HTTPS_PROXY), or point HF_ENDPOINT at a mirror",
        )
    ms = (time.monotonic() - started) * 1000
    return Check("hub", OK, f"{endpoint} answers ({ms:.0f} ms)")


def kernels_setting() -> str:
    """The cpu_kernels setting; auto where the settings cannot be read (doctor says why)."""
    from edgechat.config import load
    from edgechat.errors import EdgechatError

    try:
        return load().cpu_kernels
    except EdgechatError:
        return "auto"


def check_kernels(setting: str) -> Check:
    """llama.cpp's CPU kernels: which a load uses and why (facts/kernels.py)."""
    from edgechat.facts import kernels

    again = "edgechat doctor --check-kernels   # check this CPU's kernels again"
    now = kernels.current(setting)
    if now is None:
        return Check(
            "cpu kernels", OK, "not checked yet: the first model load checks them (seconds, once)"
        )
    detail = f"{now.title}: {now.why}"
    if now.warning:
        fix = "edgechat config unset cpu_kernels"
        return Check("cpu kernels", WARN, f"{detail}; {now.warning}", fix)
    verdict = kernels.remembered()
    failed = verdict is not None and any(not r.ok for name, r in verdict.runs.items() if name)
    return Check("cpu kernels", WARN if failed else OK, detail, again if failed else None)


def recheck_kernels(say=None):
    """Forget this build and CPU's verdict and check again now; the kernels a load uses."""
    from edgechat.facts import kernels
    from edgechat.llama import backend
    from edgechat.llama.kernelcheck import kernels_for

    kernels.forget()
    return kernels_for(backend.load(), "auto", say)


def run_all(
    device: Device | None = None, endpoint: str | None = None, cpu_kernels: str = "auto"
) -> list[Check]:
    from edgechat.facts.device import detect
    from edgechat.models.credentials import token_file
    from edgechat.paths import paths

    device = device or detect()
    endpoint = endpoint or os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    from edgechat.facts import kernels

    verdict = kernels.remembered()
    flags = check_build_flags(device, verdict.available if verdict else ())
    return [
        check_llama(device),
        *([flags] if flags else []),
        check_kernels(cpu_kernels),
        check_keyring(),
        check_disk(device),
        *check_paths(paths(), token_file()),
        check_hub(endpoint),
    ]
