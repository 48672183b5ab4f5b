"""Micro-benchmarks of the drift detector: batch update, report, and the binning kernel alone.

Run: ``python -m pytest benchmarks/micro/test_bench_drift.py --benchmark-only -p no:cacheprovider``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from driftserve.core.drift_config import DriftConfig
from driftserve.sidecar.drift.detector import ModelDriftMonitor
from driftserve.sidecar.drift.kernels import BinLayout, CountArrays, accumulate
from driftserve.sidecar.drift.profile import ReferenceProfile, build_profile

N_FEATURES = 30


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    names = [f"f{i}" for i in range(N_FEATURES)]
    return build_profile(np.random.default_rng(0).normal(size=(50_000, N_FEATURES)), names)


@pytest.fixture(scope="module")
def monitor(profile: ReferenceProfile) -> ModelDriftMonitor:
    mon = ModelDriftMonitor(profile, DriftConfig(reference="b"), "b")
    mon.update(np.zeros((1, N_FEATURES)), None, 0.0)  # load the compiled kernel before timing
    return mon


@pytest.mark.parametrize("rows", [64, 256, 1024])
def test_update(benchmark, monitor: ModelDriftMonitor, rows: int) -> None:  # type: ignore[no-untyped-def]
    batch = np.random.default_rng(1).normal(size=(rows, N_FEATURES)).astype(np.float32)
    clock = itertools.count(0.0, 0.001)
    benchmark(lambda: monitor.update(batch, None, next(clock)))
    assert monitor.rows_total > 0


def test_kernel_only_256(benchmark, profile: ReferenceProfile) -> None:  # type: ignore[no-untyped-def]
    layout = BinLayout.build(list(range(N_FEATURES)), [f.edges for f in profile.features], [False] * N_FEATURES)
    target = CountArrays.zeros(layout)
    batch = np.random.default_rng(2).normal(size=(256, N_FEATURES)).astype(np.float32)
    benchmark(accumulate, batch, layout, target)
    assert target.counts.sum() > 0


def test_report(benchmark, monitor: ModelDriftMonitor) -> None:  # type: ignore[no-untyped-def]
    monitor.update(np.random.default_rng(3).normal(size=(5000, N_FEATURES)), None, 0.0)
    rep = benchmark(monitor.report, 1.0)
    assert len(rep.items) == 2 * N_FEATURES
