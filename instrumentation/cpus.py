"""How many CPUs this process may use, and where the telemetry pipeline runs because of it.

Measured (bench/README.md, "telemetry process"): with a second core free, running
the telemetry work in a child process roughly doubles throughput and halves tail
latency against a thread, because the event loop no longer shares the GIL with it;
squeezed onto the same single core, the process costs ~20-45 % more CPU per
request (records cross a socket) and ~40 MB more memory, and gains nothing.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

Pipeline = Literal["process", "thread"]
#: CPUs per worker from which the telemetry process pays off: one for the event loop,
#: one for the telemetry.
PROCESS_FROM_CPUS = 2.0


def choose_pipeline(setting: str, cpus: float, workers: int) -> Pipeline:
    """`auto` decides by the CPUs each worker can count on; an explicit setting wins."""
    if setting == "process":
        return "process"
    if setting == "thread":
        return "thread"
    return "process" if cpus / max(workers, 1) >= PROCESS_FROM_CPUS else "thread"


def usable_cpus(
    cgroup_root: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")
) -> float:
    """The fewer of: CPUs in this process's affinity mask, the CPU limits of its cgroups."""
    affinity = float(len(os.sched_getaffinity(0)))
    quota = cgroup_cpu_quota(cgroup_root, membership)
    return min(affinity, quota) if quota is not None else affinity


def cgroup_cpu_quota(root: Path, membership: Path | None = None) -> float | None:
    """CPUs' worth of time this process's cgroups may use (Kubernetes `limits.cpu`,
    systemd `CPUQuota`), or None: unlimited. The tightest limit on the way from the
    process's own cgroup up to the root counts.

    cgroup v2 `cpu.max` is "<quota> <period>" or "max <period>"; v1 splits the same into
    `cpu.cfs_quota_us` (-1: unlimited) and `cpu.cfs_period_us`."""
    quotas = [q for d in _cgroup_dirs(root, membership) if (q := _quota_in(d)) is not None]
    return min(quotas) if quotas else None


def _cgroup_dirs(root: Path, membership: Path | None) -> list[Path]:
    """This process's cgroup directories (v2, and v1's cpu controller) and their parents.
    In a container with its own cgroup namespace that is just the root."""
    tops = [root, root / "cpu", root / "cpu,cpuacct"]
    dirs: list[Path] = list(tops)
    try:
        lines = membership.read_text().splitlines() if membership else []
    except OSError:
        lines = []
    for line in lines:
        _, controllers, path = [*line.split(":", 2), "", ""][:3]
        relative = path.strip().lstrip("/")
        if not relative:
            continue
        bases = [root] if controllers == "" else tops[1:] if "cpu" in controllers.split(",") else []
        for base in bases:
            current = base / relative
            while current != base and base in current.parents:
                dirs.append(current)
                current = current.parent
    return dirs


def _quota_in(directory: Path) -> float | None:
    try:
        v2 = (directory / "cpu.max").read_text().split()
        return _ratio(v2[0], v2[1]) if len(v2) == 2 else None
    except OSError:
        pass
    try:
        quota = (directory / "cpu.cfs_quota_us").read_text().strip()
        period = (directory / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = float(quota), float(period)
    except ValueError:  # "max"
        return None
    if q <= 0 or p <= 0 or not math.isfinite(q / p):
        return None
    return q / p
