"""What this machine can run: memory, CPU, board, disk, GPUs, and the llama.cpp build.

Every probe may fail or be missing (containers, odd kernels, no GPU tools); a field
it could not read is ``None`` ("unknown") and nothing raises. Parsers take text so
they can be tested on recorded tool output.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from edgechat.errors import EdgechatError
from edgechat.facts.cgroup import Limits, read_limits
from edgechat.facts.cpuinfo import parse_cpuinfo

GiB = 1024**3
MiB = 1024**2


@dataclass(frozen=True)
class GPU:
    vendor: str  # nvidia | amd | apple | other
    name: str
    vram_total: int | None  # bytes
    vram_free: int | None
    unified: bool = False  # shares system RAM (Apple Silicon)
    driver: str | None = None


@dataclass(frozen=True)
class Device:
    ram_total: int | None
    ram_available: int | None
    swap_total: int | None
    swap_free: int | None
    cpu_model: str | None
    cores_physical: int | None
    cores_logical: int | None
    simd: tuple[str, ...]
    arch: str
    os: str
    board: str | None
    models_dir: str
    disk_free: int | None
    gpus: tuple[GPU, ...] = ()
    llama_backends: tuple[str, ...] = ()
    gpu_offload: bool | None = None
    overrides: tuple[str, ...] = field(default=())
    # ram_total/ram_available are what this process may use (its cgroup's limit, when
    # lower); the host's own figures are kept for `device`.
    host_ram_total: int | None = None
    host_ram_available: int | None = None
    limits: Limits = field(default_factory=Limits)

    @property
    def cores_usable(self) -> int | None:
        """Cores this process may run on: the affinity mask and CPU quota applied."""
        return self.limits.usable_cores(self.cores_physical or self.cores_logical)

    @property
    def vram_total(self) -> int:
        return sum(g.vram_total or 0 for g in self.gpus if not g.unified)

    @property
    def vram_free(self) -> int:
        return sum((g.vram_free or g.vram_total or 0) for g in self.gpus if not g.unified)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["vram_total"] = self.vram_total
        d["vram_free"] = self.vram_free
        d["cores_usable"] = self.cores_usable
        d["limits"]["memory"] = self.limits.memory
        return d


# -- sizes -------------------------------------------------------------------------------

_UNITS = {"": 1, "b": 1, "k": 1024, "m": MiB, "g": GiB, "t": 1024 * GiB}


def parse_size(text: str) -> int:
    """'8G', '8 GB', '7.5GiB', '512M' -> bytes (binary units, as RAM is sold)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", text.lower())
    if not m:
        raise EdgechatError(f"cannot read size '{text}'; write it like 8G, 512M or 7.5GiB")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def format_size(n: int | None) -> str:
    if n is None:
        return "unknown"
    if n >= GiB:
        return f"{n / GiB:.1f} GiB"
    return f"{n / MiB:.0f} MiB"


# -- parsers (pure: tested on recorded output) ---------------------------------------------


def parse_nvidia_smi(text: str) -> list[GPU]:
    """``nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version
    --format=csv,noheader,nounits`` (MiB)."""
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3:
            continue

        def mib(value: str) -> int | None:
            return int(float(value) * MiB) if re.fullmatch(r"[0-9.]+", value) else None

        gpus.append(
            GPU(
                "nvidia",
                parts[0],
                mib(parts[1]),
                mib(parts[2]),
                driver=parts[3] if len(parts) > 3 else None,
            )
        )
    return gpus


def parse_rocm_smi(text: str) -> list[GPU]:
    """``rocm-smi --showproductname --showmeminfo vram --json`` (bytes)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return []
    gpus = []
    for key, card in sorted(data.items()):
        if not key.startswith("card") or not isinstance(card, dict):
            continue
        total = card.get("VRAM Total Memory (B)")
        used = card.get("VRAM Total Used Memory (B)")
        name = card.get("Card Series") or card.get("Card series") or card.get("Card model") or key
        total_b = int(total) if total is not None else None
        free_b = total_b - int(used) if total_b is not None and used is not None else None
        gpus.append(GPU("amd", str(name), total_b, free_b))
    return gpus


def parse_board(model_text: str | None) -> str | None:
    """The board name from /proc/device-tree/model (NUL-terminated)."""
    if not model_text:
        return None
    name = model_text.replace("\x00", "").strip()
    return name or None


def backends_from_libs(names: list[str]) -> tuple[str, ...]:
    """llama.cpp backends compiled into this build, from its shared library names."""
    found = []
    for backend in ("cuda", "metal", "vulkan", "hip", "sycl", "opencl", "blas", "cpu"):
        if any(re.match(rf"(lib)?ggml-{backend}\b", n) for n in names):
            found.append(backend)
    return tuple(found)


# -- probes (each returns None or empty when it cannot tell) ------------------------------


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def _run(cmd: list[str], timeout: float = 5.0) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _amd_sysfs() -> list[GPU]:
    gpus = []
    for card in sorted(Path("/sys/class/drm").glob("card[0-9]*")):
        dev = card / "device"
        vendor = _read(str(dev / "vendor"))
        if not vendor or "0x1002" not in vendor:  # AMD's PCI vendor id
            continue
        total = _read(str(dev / "mem_info_vram_total"))
        used = _read(str(dev / "mem_info_vram_used"))
        if total is None:
            continue
        t = int(total)
        gpus.append(GPU("amd", f"AMD GPU ({card.name})", t, t - int(used) if used else None))
    return gpus


def probe_gpus(ram_total: int | None) -> list[GPU]:
    gpus: list[GPU] = []
    smi = _run(
        [
            "nvidia-smi",
            "--query-gpu=name,memory.total,memory.free,driver_version",
            "--format=csv,noheader,nounits",
        ]
    )
    if smi:
        gpus += parse_nvidia_smi(smi)
    amd = _amd_sysfs()
    if not amd:
        rocm = _run(["rocm-smi", "--showproductname", "--showmeminfo", "vram", "--json"])
        amd = parse_rocm_smi(rocm) if rocm else []
    gpus += amd
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        name = (_run(["sysctl", "-n", "machdep.cpu.brand_string"]) or "Apple Silicon").strip()
        # Metal may use about 2/3 to 3/4 of unified memory; report the whole, flag it unified.
        gpus.append(GPU("apple", name, ram_total, None, unified=True))
    return gpus


def llama_build() -> tuple[tuple[str, ...], bool | None]:
    """Backends of the installed llama-cpp-python, read from its libraries (no import)."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return (), None
    libs: list[str] = []
    for folder in spec.submodule_search_locations:
        lib = Path(folder) / "lib"
        if lib.is_dir():
            libs += [p.name for p in lib.iterdir()]
    backends = backends_from_libs(libs)
    if not backends:
        return (), None
    return backends, any(b not in ("cpu", "blas") for b in backends)


def models_dir() -> Path:
    """Where pulled models go: the huggingface_hub cache, honouring HF_HOME."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def _disk_free(path: Path) -> int | None:
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def detect(memory: str | None = None, vram: str | None = None, gpu: str | None = None) -> Device:
    """Probe this machine; ``memory``/``vram`` (like '8G') and ``gpu`` (like 'cuda:24G')
    override what was found."""
    try:
        import psutil

        vm, sw = psutil.virtual_memory(), psutil.swap_memory()
        ram = (vm.total, vm.available, sw.total, sw.free)
        cores = (psutil.cpu_count(logical=False), psutil.cpu_count(logical=True))
    except Exception:  # psutil missing or unsupported here: unknown, not a crash
        ram = (None, None, None, None)
        cores = (None, os.cpu_count())
    cpu_model, simd = parse_cpuinfo(_read("/proc/cpuinfo") or "")
    if cpu_model is None and platform.system() == "Darwin":
        cpu_model = (_run(["sysctl", "-n", "machdep.cpu.brand_string"]) or "").strip() or None
    backends, offload = llama_build()
    mdir = models_dir()
    limits = read_limits()
    ram_total, ram_available = limits.within(ram[0], ram[1])
    device = Device(
        ram_total=ram_total,
        ram_available=ram_available,
        swap_total=ram[2],
        swap_free=ram[3],
        cpu_model=cpu_model or platform.processor() or None,
        cores_physical=cores[0],
        cores_logical=cores[1],
        simd=simd,
        arch=platform.machine(),
        os=f"{platform.system()} {platform.release()}",
        board=parse_board(_read("/proc/device-tree/model")),
        models_dir=str(mdir),
        disk_free=_disk_free(mdir),
        gpus=tuple(probe_gpus(ram[0])),
        llama_backends=backends,
        gpu_offload=offload,
        host_ram_total=ram[0],
        host_ram_available=ram[1],
        limits=limits,
    )
    return with_overrides(device, memory, vram, gpu)


def with_overrides(
    device: Device, memory: str | None, vram: str | None, gpu: str | None = None
) -> Device:
    """Pretend to have this much RAM / VRAM, or this GPU and llama.cpp backend ('cuda:24G',
    'metal:16G' for a Mac with 16 GiB): for planning another machine, or to leave room."""
    if gpu:
        device = _assume_gpu(device, gpu, memory is None)
    notes = list(device.overrides)
    if memory:
        size = parse_size(memory)
        device = replace(device, ram_total=size, ram_available=size)
        notes.append(f"memory={format_size(size)}")
    if vram:
        size = parse_size(vram)
        # One GPU of that size stands for whatever was found.
        found = [g for g in device.gpus if not g.unified]
        vendor, name = (found[0].vendor, found[0].name) if found else ("other", "assumed GPU")
        device = replace(device, gpus=(GPU(vendor, name, size, size),))
        notes.append(f"vram={format_size(size)}")
    return replace(device, overrides=tuple(notes))


def _assume_gpu(device: Device, spec: str, set_ram: bool) -> Device:
    from edgechat.errors import EdgechatError
    from edgechat.facts.gpuspec import BACKEND_VENDOR, parse_gpu_spec

    try:
        backend, size_text = parse_gpu_spec(spec)
        size = parse_size(size_text)
    except ValueError as e:
        raise EdgechatError(str(e)) from None
    builds = {"cuda": "cuda", "rocm": "hip", "vulkan": "vulkan", "metal": "metal"}[backend]
    note = f"gpu={backend}:{format_size(size)}"
    if backend == "metal":  # Apple Silicon: the GPU's memory is the RAM
        gpu = GPU("apple", "assumed Apple GPU", None, None, unified=True)
        if set_ram:
            device = replace(device, ram_total=size, ram_available=size)
    else:
        gpu = GPU(BACKEND_VENDOR[backend], f"assumed {backend.upper()} GPU", size, size)
    return replace(
        device,
        gpus=(gpu,),
        llama_backends=("cpu", builds),
        gpu_offload=True,
        overrides=(*device.overrides, note),
    )
