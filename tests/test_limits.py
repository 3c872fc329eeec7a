"""What a process may use inside a container or a service: cgroup v2 and v1 limits read
from recorded files in a temporary tree, the smallest up the tree winning; the fit check
and `device` planning for the limit; and, for real, a child process in a cgroup this test
creates (where it may) and under a CPU affinity mask."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from edgechat.facts import cgroup, device
from edgechat.facts.cgroup import Limits, read_limits
from edgechat.facts.device import GiB, MiB

# Recorded from real machines: systemd on cgroup v2, and a Docker host on v1 (the
# container's group is the mount's root there), and the hybrid layout of this project's
# machine (v1 controllers, an empty v2 hierarchy beside them).
V2_MOUNTINFO = (
    "24 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n"
    "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n"
)
V1_MOUNTINFO = (
    "660 580 0:60 / / rw,relatime master:310 - overlay overlay rw,lowerdir=/x\n"
    "667 666 0:29 /docker/4b1f /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime "
    "master:16 - cgroup cgroup rw,memory\n"
    "668 666 0:30 /docker/4b1f /sys/fs/cgroup/cpu,cpuacct ro,nosuid,nodev,noexec,relatime "
    "master:17 - cgroup cgroup rw,cpu,cpuacct\n"
)
HYBRID_MOUNTINFO = (
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
)
V1_UNLIMITED = "9223372036854771712\n"


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_v2_a_service_under_a_slice_the_smallest_limit_up_the_tree_wins(tmp_path):
    svc = "/sys/fs/cgroup/system.slice/edgechat.service"
    root = tree(
        tmp_path,
        {
            "/proc/self/cgroup": "0::/system.slice/edgechat.service\n",
            "/proc/self/mountinfo": V2_MOUNTINFO,
            f"{svc}/memory.max": f"{2 * GiB}\n",  # MemoryMax=2G
            f"{svc}/memory.high": "max\n",
            f"{svc}/cpu.max": "max 100000\n",
            "/sys/fs/cgroup/system.slice/memory.max": f"{GiB}\n",  # the slice allows less
            "/sys/fs/cgroup/system.slice/memory.high": f"{3 * GiB}\n",
            "/sys/fs/cgroup/system.slice/memory.current": f"{400 * MiB}\n",
            "/sys/fs/cgroup/system.slice/memory.stat": (
                f"anon {200 * MiB}\nfile {200 * MiB}\ninactive_file {150 * MiB}\n"
            ),
            "/sys/fs/cgroup/system.slice/cpu.max": "150000 100000\n",  # CPUQuota=150%
        },
    )
    lim = read_limits(root, affinity=False)
    assert lim.memory_max == GiB and lim.memory_high == 3 * GiB and lim.memory == GiB
    assert lim.memory_group == "/sys/fs/cgroup/system.slice/memory.max"
    assert lim.memory_used == 250 * MiB  # idle file cache is not counted
    assert lim.memory_free == GiB - 250 * MiB
    assert lim.cpu_quota == 1.5 and lim.cpu_group == "/sys/fs/cgroup/system.slice/cpu.max"
    assert lim.usable_cores(8) == 1  # one and a half CPUs of time: one thread, not two
    assert lim.within(16 * GiB, 12 * GiB) == (GiB, GiB - 250 * MiB)


def test_v2_memory_high_below_max_is_the_limit_to_plan_for(tmp_path):
    root = tree(
        tmp_path,
        {
            "/proc/self/cgroup": "0::/user.slice/app\n",
            "/proc/self/mountinfo": V2_MOUNTINFO,
            "/sys/fs/cgroup/user.slice/app/memory.max": f"{4 * GiB}\n",
            "/sys/fs/cgroup/user.slice/app/memory.high": f"{3 * GiB}\n",
        },
    )
    lim = read_limits(root, affinity=False)
    assert lim.memory == 3 * GiB and lim.memory_group.endswith("app/memory.high")


def test_v2_container_with_its_own_namespace_reads_the_mount_root(tmp_path):
    root = tree(
        tmp_path,
        {
            "/proc/self/cgroup": "0::/\n",
            "/proc/self/mountinfo": V2_MOUNTINFO,
            "/sys/fs/cgroup/memory.max": f"{512 * MiB}\n",  # docker run -m 512m
            "/sys/fs/cgroup/cpu.max": "200000 100000\n",  # --cpus 2
        },
    )
    lim = read_limits(root, affinity=False)
    assert (lim.memory, lim.cpu_quota) == (512 * MiB, 2.0)


def test_v1_docker_without_a_cgroup_namespace(tmp_path):
    root = tree(
        tmp_path,
        {
            "/proc/self/cgroup": (
                "12:pids:/docker/4b1f\n4:memory:/docker/4b1f\n2:cpu,cpuacct:/docker/4b1f\n"
            ),
            "/proc/self/mountinfo": V1_MOUNTINFO,
            "/sys/fs/cgroup/memory/memory.limit_in_bytes": f"{768 * MiB}\n",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes": f"{300 * MiB}\n",
            "/sys/fs/cgroup/memory/memory.stat": f"cache 1\ntotal_inactive_file {100 * MiB}\n",
            "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "50000\n",
            "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        },
    )
    lim = read_limits(root, affinity=False)
    assert lim.memory == 768 * MiB and lim.memory_used == 200 * MiB
    assert lim.cpu_quota == 0.5 and lim.usable_cores(4) == 1  # never fewer than one


def test_no_limits_unlimited_values_and_unreadable_files_are_no_limit(tmp_path):
    root = tree(
        tmp_path,
        {
            "/proc/self/cgroup": "4:memory:/a\n1:cpu:/a\n0::/\n",
            "/proc/self/mountinfo": HYBRID_MOUNTINFO,
            "/sys/fs/cgroup/memory/a/memory.limit_in_bytes": V1_UNLIMITED,
            "/sys/fs/cgroup/memory/memory.limit_in_bytes": V1_UNLIMITED,
            "/sys/fs/cgroup/cpu/a/cpu.cfs_quota_us": "-1\n",
            "/sys/fs/cgroup/cpu/a/cpu.cfs_period_us": "100000\n",
            "/sys/fs/cgroup/unified/memory.max": "garbage\n",
        },
    )
    lim = read_limits(root, affinity=False)
    assert lim == Limits()
    assert lim.within(16 * GiB, 12 * GiB) == (16 * GiB, 12 * GiB)
    assert lim.usable_cores(4) == 4
    assert read_limits(tmp_path / "nowhere", affinity=False) == Limits()


def test_hybrid_the_smaller_of_v1_and_v2_limits_wins(tmp_path):
    root = tree(
        tmp_path,
        {
            "/proc/self/cgroup": "4:memory:/a\n0::/b\n",
            "/proc/self/mountinfo": HYBRID_MOUNTINFO,
            "/sys/fs/cgroup/memory/a/memory.limit_in_bytes": f"{2 * GiB}\n",
            "/sys/fs/cgroup/unified/b/memory.max": f"{GiB}\n",
        },
    )
    assert read_limits(root, affinity=False).memory == GiB


def test_a_path_that_climbs_out_of_the_tree_stays_inside_it(tmp_path):
    root = tree(
        tmp_path / "root",
        {
            "/proc/self/cgroup": "0::/../../../etc\n",
            "/proc/self/mountinfo": V2_MOUNTINFO,
        },
    )
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "memory.max").write_text("1\n")
    assert read_limits(root, affinity=False).memory is None


def test_mountinfo_escapes_and_the_parsers():
    mounts = cgroup.parse_mountinfo(
        "40 31 0:37 / /sys/fs/my\\040cgroups rw - cgroup2 none rw\nnot a mount line\n"
    )
    assert mounts == [("/", "/sys/fs/my cgroups", "cgroup2", {"rw"})]
    assert cgroup.parse_cpu_max("max 100000") is None
    assert cgroup.parse_cpu_max("25000 100000") == 0.25
    assert cgroup.parse_cfs("-1", "100000") is None
    assert cgroup.parse_bytes("max") is None and cgroup.parse_bytes(V1_UNLIMITED) is None


def _recorded(monkeypatch, tmp_path, memory: int, quota: str) -> None:
    root = tree(
        tmp_path,
        {
            "/proc/self/cgroup": "0::/\n",
            "/proc/self/mountinfo": V2_MOUNTINFO,
            "/sys/fs/cgroup/memory.max": f"{memory}\n",
            "/sys/fs/cgroup/cpu.max": quota,
        },
    )
    monkeypatch.setattr(device, "read_limits", lambda: read_limits(root, affinity=False))


def test_detect_plans_for_the_limit_not_the_host(monkeypatch, tmp_path, starter_path):
    from edgechat.facts.gguf import inspect_file
    from edgechat.planning.fit import NO_FIT, judge
    from edgechat.planning.memory import Shape, estimate
    from edgechat.planning.plan import RunPlan

    _recorded(monkeypatch, tmp_path, 64 * MiB, "100000 100000\n")
    d = device.detect()
    assert d.ram_total == 64 * MiB and d.ram_available <= 64 * MiB
    assert d.host_ram_total > d.ram_total  # the host's figures are kept beside it
    assert d.cores_usable == 1 and d.as_dict()["limits"]["memory"] == 64 * MiB
    est = estimate(RunPlan(starter_path, n_ctx=512), Shape.from_facts(inspect_file(starter_path)))
    fit = judge(est, d)
    assert fit.label == NO_FIT and "64 MiB is available" in fit.why


def test_device_text_and_json_show_the_host_and_the_limit(monkeypatch, tmp_path, capsys):
    from edgechat.cli import main

    _recorded(monkeypatch, tmp_path, 3 * GiB, "50000 100000\n")
    assert main(["device"]) == 0
    out = capsys.readouterr().out
    assert "memory     3.0 GiB for this process" in out
    assert "host       " in out and "limit      memory: /sys/fs/cgroup/memory.max" in out
    assert "this process may use 1" in out and "0.5 CPUs: /sys/fs/cgroup/cpu.max" in out
    assert main(["device", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ram_total"] == 3 * GiB and data["host_ram_total"] > 3 * GiB
    assert data["limits"]["cpu_quota"] == 0.5 and data["cores_usable"] == 1


# -- for real ------------------------------------------------------------------------------


def _device_json(preexec=None) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "edgechat", "device", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=preexec,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.subprocess
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")
def test_taskset_for_real_one_cpu_is_what_the_process_may_use():
    data = _device_json(lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}))
    assert data["limits"]["cpus_allowed"] == 1 and data["cores_usable"] == 1


def _own_memory_group() -> tuple[str, Path] | None:
    """This process's memory cgroup folder (v1 or v2), if this system has one."""
    for version, controllers, folders in cgroup._groups(Path("/"), "self"):
        if version == "v1" and "memory" in controllers:
            return version, folders[0]
    for version, _, folders in cgroup._groups(Path("/"), "self"):
        if version == "v2" and (folders[0] / "memory.max").exists():
            return version, folders[0]
    return None


@pytest.mark.subprocess
def test_a_cgroup_created_for_real_limits_what_device_reports():
    found = _own_memory_group()
    if found is None:
        pytest.skip("no memory cgroup to create a child in on this system")
    version, parent = found
    child = parent / f"edgechat-test-{uuid.uuid4().hex[:8]}"
    try:
        child.mkdir()
    except OSError as e:
        pytest.skip(f"cannot create a cgroup here ({e.strerror}): not root, or not delegated")
    try:
        limit = 300 * MiB
        name = "memory.limit_in_bytes" if version == "v1" else "memory.max"
        try:
            (child / name).write_text(str(limit))
        except OSError as e:
            pytest.skip(f"cannot set {name} on a new cgroup ({e.strerror})")
        procs = child / "cgroup.procs"

        def enter() -> None:
            procs.write_text(str(os.getpid()))

        try:
            data = _device_json(enter)
        except subprocess.SubprocessError as e:  # v2 without delegation refuses the move
            pytest.skip(f"cannot move a process into the new cgroup ({e})")
        assert data["ram_total"] == limit
        assert data["limits"]["memory_group"].endswith(f"{child.name}/{name}")
        assert data["host_ram_total"] > limit
    finally:
        child.rmdir()
