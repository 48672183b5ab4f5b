"""The pure statistics against SciPy and straightforward NumPy on the same data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from driftserve.sidecar.drift.profile import profile_column
from driftserve.sidecar.drift.stats import (
    benjamini_hochberg,
    bonferroni,
    kolmogorov_pvalue,
    ks_from_cdfs,
    psi,
    psi_expected,
)


def _live_counts(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(edges, values, side="right"), minlength=edges.size + 1)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("shape", ["continuous", "ties", "shifted"])
def test_binned_ks_within_reported_bound_of_scipy(seed: int, shape: str) -> None:
    rng = np.random.default_rng(seed)
    if shape == "ties":
        ref, live = rng.poisson(4.0, 5000).astype(float), rng.poisson(4.3, 3000).astype(float)
    elif shape == "shifted":
        ref, live = rng.normal(size=5000), rng.normal(0.2, 1.1, size=3000)
    else:
        ref, live = rng.lognormal(size=5000), rng.lognormal(size=3000)
    prof = profile_column(ref, "x", "numeric", bins=200)
    stat, bound = ks_from_cdfs(prof.counts, _live_counts(prof.edges, live))
    exact = sps.ks_2samp(ref, live).statistic
    assert stat <= exact + 1e-12
    assert exact <= stat + bound + 1e-12
    assert bound <= max(np.max(prof.counts) / prof.counts.sum(), 1e-12) + 1e-12


def test_ks_bound_is_exact_when_bins_separate_every_value() -> None:
    rng = np.random.default_rng(7)
    ref = rng.integers(0, 5, 2000).astype(float)
    live = rng.choice(5, 1000, p=[0.1, 0.1, 0.2, 0.3, 0.3]).astype(float)
    prof = profile_column(ref, "x", "numeric", bins=1000)
    stat, _ = ks_from_cdfs(prof.counts, _live_counts(prof.edges, live))
    assert stat == pytest.approx(sps.ks_2samp(ref, live).statistic, abs=1e-12)


def test_psi_matches_plain_numpy_on_the_same_bins() -> None:
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 500, 10).astype(float)
    live = rng.integers(0, 500, 10).astype(float)
    live[3] = 0.0
    eps = 1e-4
    p = np.maximum(ref / ref.sum(), eps)
    q = np.maximum(live / live.sum(), eps)
    assert psi(ref, live, eps) == pytest.approx(float(np.sum((q - p) * np.log(q / p))), rel=1e-12)


def test_psi_identical_is_zero_and_empty_side_is_nan() -> None:
    counts = np.array([5, 10, 0, 3])
    assert psi(counts, counts * 7) == pytest.approx(0.0, abs=1e-15)
    assert math.isnan(psi(counts, np.zeros(4)))


def test_psi_expected_formula_and_null_mean() -> None:
    assert psi_expected(10, 1000, 500) == pytest.approx(9 * (1 / 1000 + 1 / 500))
    rng = np.random.default_rng(3)
    probs = np.full(10, 0.1)
    draws = [psi(rng.multinomial(4000, probs), rng.multinomial(1000, probs)) for _ in range(400)]
    assert np.mean(draws) == pytest.approx(psi_expected(10, 4000, 1000), rel=0.15)


@pytest.mark.parametrize("n,m", [(5000, 3000), (20000, 20000), (100000, 2000)])
def test_kolmogorov_pvalue_matches_scipy_asymp(n: int, m: int) -> None:
    rng = np.random.default_rng(n + m)
    for shift in (0.0, 0.02, 0.05, 0.1):
        a, b = rng.normal(size=n), rng.normal(shift, size=m)
        res = sps.ks_2samp(a, b, method="asymp")
        assert kolmogorov_pvalue(res.statistic, n, m) == pytest.approx(res.pvalue, abs=1e-3)
    for stat in np.linspace(0.001, 0.1, 50):
        expected = sps.kstwo.sf(stat, round(n * m / (n + m)))
        assert kolmogorov_pvalue(float(stat), n, m) == pytest.approx(expected, abs=1e-3)


def test_kolmogorov_pvalue_edges() -> None:
    assert kolmogorov_pvalue(0.0, 100, 100) == 1.0
    assert kolmogorov_pvalue(0.9, 10000, 10000) == 0.0
    assert math.isnan(kolmogorov_pvalue(math.nan, 100, 100))
    with pytest.raises(ValueError, match=r"stat must be in \[0, 1\]"):
        kolmogorov_pvalue(1.5, 10, 10)


def test_corrections_match_scipy_and_skip_nan() -> None:
    rng = np.random.default_rng(5)
    p = rng.uniform(0, 0.2, 25)
    np.testing.assert_allclose(benjamini_hochberg(p), sps.false_discovery_control(p, method="bh"), rtol=1e-12)
    np.testing.assert_allclose(bonferroni(p), np.minimum(1, p * 25))
    with_nan = np.append(p, np.nan)
    assert np.isnan(benjamini_hochberg(with_nan)[-1])
    np.testing.assert_allclose(benjamini_hochberg(with_nan)[:-1], benjamini_hochberg(p))
    np.testing.assert_allclose(bonferroni(with_nan)[:-1], bonferroni(p))


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        psi([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="live_counts must hold finite non-negative"):
        ks_from_cdfs([1, 2], [-1, 2])
    with pytest.raises(ValueError, match=r"pvalues must lie in \[0, 1\]"):
        benjamini_hochberg([0.5, 2.0])
