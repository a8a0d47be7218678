"""The CPUs a process may use: a cgroup's quota caps the affinity mask, in either cgroup version,
with the layouts a container sees (its own cgroup namespace, or the host's paths)."""

from __future__ import annotations

import os
from pathlib import Path

from stellwerk.config import load_settings
from stellwerk.cpus import cgroup_cpu_quota, usable_cpus

CORES = len(os.sched_getaffinity(0))


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v2(root: Path, cgroup: str = "/") -> None:
    write(root, "proc/self/cgroup", f"0::{cgroup}\n")


def v1(root: Path, cgroup: str = "/") -> None:
    write(
        root,
        "proc/self/cgroup",
        f"4:memory:{cgroup}\n3:cpu,cpuacct:{cgroup}\n1:name=systemd:{cgroup}\n0::/\n",
    )


def test_without_a_quota_every_core_of_the_affinity_mask_counts(tmp_path: Path) -> None:
    v2(tmp_path)
    write(tmp_path, "sys/fs/cgroup/cpu.max", "max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    assert usable_cpus(tmp_path) == CORES
    assert usable_cpus(tmp_path / "nothing-mounted") == CORES


def test_a_container_limited_to_one_cpu_gets_one(tmp_path: Path) -> None:
    # Kubernetes' limits.cpu: 1 under cgroup v2, in the pod's own cgroup namespace.
    v2(tmp_path)
    write(tmp_path, "sys/fs/cgroup/cpu.max", "100000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.0
    assert usable_cpus(tmp_path) == 1


def test_part_of_a_cpu_rounds_up_and_never_to_zero(tmp_path: Path) -> None:
    v2(tmp_path)
    write(tmp_path, "sys/fs/cgroup/cpu.max", "150000 100000\n")
    assert usable_cpus(tmp_path) == min(CORES, 2)
    write(tmp_path, "sys/fs/cgroup/cpu.max", "10000 100000\n")
    assert usable_cpus(tmp_path) == 1


def test_the_tightest_quota_of_the_cgroup_and_its_ancestors_counts(tmp_path: Path) -> None:
    v2(tmp_path, "/kubepods/pod1/container")
    write(tmp_path, "sys/fs/cgroup/kubepods/pod1/container/cpu.max", "max 100000\n")
    write(tmp_path, "sys/fs/cgroup/kubepods/pod1/cpu.max", "50000 100000\n")
    write(tmp_path, "sys/fs/cgroup/kubepods/cpu.max", "400000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 0.5


def test_cgroup_v1_reads_the_cfs_quota(tmp_path: Path) -> None:
    # Docker on cgroup v1 without a cgroup namespace: /proc shows the host's path, the mount is
    # the container's own cgroup.
    v1(tmp_path, "/docker/0123abcd")
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "100000\n")
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.0
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    assert cgroup_cpu_quota(tmp_path) is None


def test_this_machine_answers_without_an_error() -> None:
    assert 1 <= usable_cpus() <= CORES
    assert load_settings({}).process_count == min(usable_cpus(), 2)
