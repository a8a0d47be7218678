"""How many CPUs this process may use: its affinity, capped by its cgroup's CPU quota.

A container limited to one CPU (`docker run --cpus 1`, a Kubernetes `limits.cpu: 1`) still sees
every core of the node in its affinity mask: the limit is a quota of CPU time per period in the
cgroup, which `os.sched_getaffinity` does not show. Counting cores there would start processes
that only take turns on the one CPU's worth of time.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Final

_ROOT: Final = Path("/")


def usable_cpus(root: Path = _ROOT) -> int:
    """The CPUs of the affinity mask, or fewer when a cgroup quota allows less time: the quota
    rounded up (1.5 CPUs of time keep a second process busy half the time), at least one.
    `root` is where `/proc` and `/sys/fs/cgroup` are found (tests lay out their own)."""
    cores = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota(root)
    if quota is None:
        return cores
    return max(1, min(cores, math.ceil(quota)))


def cgroup_cpu_quota(root: Path = _ROOT) -> float | None:
    """The tightest CPU quota (in CPUs) on this process's cgroup and its ancestors, from cgroup
    v2's `cpu.max` or v1's `cpu.cfs_quota_us` / `cpu.cfs_period_us`; None when there is none."""
    try:
        memberships = (root / "proc/self/cgroup").read_text()
    except OSError:
        return None
    quotas: list[float] = []
    for line in memberships.splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            quotas += _quotas(root / "sys/fs/cgroup", path, _v2_quota)
        elif "cpu" in controllers.split(","):
            for mount in (root / "sys/fs/cgroup/cpu,cpuacct", root / "sys/fs/cgroup/cpu"):
                if mount.is_dir():
                    quotas += _quotas(mount, path, _v1_quota)
                    break
    return min(quotas, default=None)


def _quotas(mount: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
    """The quotas on the cgroup at `path` under `mount` and on each ancestor inside the mount.
    A container that was not given its own cgroup namespace sees its full path in
    /proc/self/cgroup while its own cgroup is mounted as the root: then only the root counts."""
    relative = PurePosixPath(path).relative_to("/")
    folder = mount / relative
    if not folder.is_dir():
        folder = mount
    found = []
    while True:
        quota = read(folder)
        if quota is not None:
            found.append(quota)
        if folder == mount:
            return found
        folder = folder.parent


def _v2_quota(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def _v1_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period
