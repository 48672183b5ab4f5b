"""How many CPUs this process may use: its affinity mask, capped by a cgroup CPU quota.

``os.cpu_count()`` counts the machine. A container limited to 2 CPUs (Kubernetes
``resources.limits.cpu: 2``) on a 64-core node sees 64 there, and 64 in its affinity mask too: the
limit is a CFS quota, in ``cpu.max`` (cgroup v2) or ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``
(cgroup v1). Policies that depend on how much of the machine a server really has read this instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from driftserve.core import gil_cpu

CGROUP = Path("/sys/fs/cgroup")


def cgroup_quota_cpus(root: Path = CGROUP) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (e.g. 1.5), or None when there is none."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # cgroup v2
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return _cgroup_v1_quota_cpus(root)


def _cgroup_v1_quota_cpus(root: Path) -> float | None:
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None  # -1: no limit


def usable_cpus(root: Path = CGROUP) -> float:
    """CPUs this process can run on at once: affinity mask, capped by the cgroup quota (at least 1)."""
    cpus = float(len(affinity()))
    quota = cgroup_quota_cpus(root)
    return max(1.0, min(cpus, quota) if quota is not None else cpus)


def affinity() -> list[int]:
    """The CPUs this process may run on, sorted (every CPU the OS reports where affinity is unknown).
    The mask is the calling thread's: after ``--gil-cpu`` placed the loop, the set from before."""
    whole = gil_cpu.whole_set()
    if whole is not None:
        return sorted(whole)
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def partition_cpus(cpus: list[int], parts: int) -> list[list[int]]:
    """``cpus`` cut into ``parts`` contiguous, disjoint shares as even as possible (the first ones get
    the extra CPU); ValueError when there are fewer CPUs than parts."""
    if parts < 1 or len(cpus) < parts:
        raise ValueError(f"{len(cpus)} CPUs cannot give each of {parts} processes one of its own")
    size, extra = divmod(len(cpus), parts)
    shares, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        shares.append(cpus[start:end])
        start = end
    return shares


def format_cpu_set(cpus: list[int]) -> str:
    return ",".join(str(cpu) for cpu in cpus)


def parse_cpu_set(text: str) -> set[int]:
    """``"0,1,4"`` as a set of CPU numbers; ValueError for anything else."""
    parts = text.split(",")
    if not all(part.isdecimal() for part in parts):  # also refuses "", "-1" and ranges such as "0-3"
        raise ValueError(f"a CPU set is comma-separated CPU numbers such as 0,1; got {text!r}")
    return {int(part) for part in parts}


def pin_to(cpus: set[int]) -> None:
    """Confine this process to ``cpus``. Call it before any thread starts: threads inherit the mask
    of the thread that creates them, and one started earlier keeps its own."""
    os.sched_setaffinity(0, cpus)
