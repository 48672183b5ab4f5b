"""The kernels' vectorizable logarithm against NumPy's, across the whole float64 range."""

from __future__ import annotations

import numpy as np
from numba import njit

from driftserve.core.preprocessing import fastlog


@njit
def _log_all(values: np.ndarray) -> np.ndarray:
    out = np.empty_like(values)
    for i in range(values.size):
        out[i] = fastlog.log(values[i])
    return out


def test_within_one_ulp_over_all_magnitudes() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            10.0 ** rng.uniform(-307, 308, 200_000),
            rng.uniform(0.5, 2.0, 100_000),  # around 1, where cancellation would show
            rng.uniform(0.0, 2.3e-308, 10_000),  # subnormals
            np.array([5e-324, 1.0, 2.0, np.e, np.sqrt(2.0), 1.7976931348623157e308]),
        ]
    )
    expected = np.log(x)
    got = _log_all(x)
    ulps = np.abs(got - expected) / np.spacing(np.abs(expected))
    assert np.all((got == expected) | (ulps <= 1.0)), float(np.max(ulps))
    assert got[-5] == 0.0


def test_special_values_follow_ieee() -> None:
    x = np.array([0.0, -0.0, -1.0, -np.inf, np.inf, np.nan])
    got = _log_all(x)
    assert got[0] == -np.inf and got[1] == -np.inf
    assert np.isnan(got[2]) and np.isnan(got[3]) and np.isnan(got[5])
    assert got[4] == np.inf
