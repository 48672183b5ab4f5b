"""``usable_cpus``: the affinity mask capped by a cgroup CPU quota (v2 ``cpu.max``, v1 CFS files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from driftserve.core.cpus import cgroup_quota_cpus, parse_cpu_set, partition_cpus, usable_cpus


def test_cgroup_v2_quota_is_quota_over_period(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_quota_cpus(tmp_path) == 1.5


def test_cgroup_v2_without_a_limit_has_no_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota_cpus(tmp_path) is None


def test_cgroup_v1_quota_and_its_unlimited_minus_one(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("400000\n")
    assert cgroup_quota_cpus(tmp_path) == 4.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_quota_cpus(tmp_path) is None


def test_no_cgroup_files_no_quota(tmp_path: Path) -> None:
    assert cgroup_quota_cpus(tmp_path) is None


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="affinity masks are Linux's")
def test_usable_cpus_is_the_affinity_capped_by_the_quota_and_never_below_one(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus(tmp_path) == affinity
    (tmp_path / "cpu.max").write_text(f"{affinity * 2 * 100000} 100000\n")
    assert usable_cpus(tmp_path) == affinity  # a quota above the mask changes nothing
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert usable_cpus(tmp_path) == 1.0  # half a CPU still runs one thread at a time


def test_cpus_are_cut_into_disjoint_contiguous_shares_as_even_as_possible() -> None:
    assert partition_cpus([0, 1, 2, 3, 4, 5, 6, 7], 4) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert partition_cpus([2, 3, 5, 8, 9], 2) == [[2, 3, 5], [8, 9]]  # the mask's own CPUs, gaps kept
    assert partition_cpus([0, 1], 2) == [[0], [1]]
    with pytest.raises(ValueError, match="2 CPUs cannot give each of 3 processes"):
        partition_cpus([0, 1], 3)


def test_a_cpu_set_is_comma_separated_cpu_numbers() -> None:
    assert parse_cpu_set("0,1,4") == {0, 1, 4}
    for bad in ("", "0-3", "a", "-1"):
        with pytest.raises(ValueError, match="comma-separated CPU numbers"):
            parse_cpu_set(bad)
