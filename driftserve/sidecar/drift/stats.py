"""Pure drift statistics over binned counts: PSI, binned two-sample KS, multiple-test corrections.

Everything here works on small count vectors (bins, not rows), so plain NumPy is fast enough and
the functions stay easy to check against SciPy in tests. SciPy itself is not a runtime
dependency: the Kolmogorov tail is computed here with the Pelz-Good expansion, which is what
``scipy.stats.ks_2samp(..., method="asymp")`` evaluates for large samples.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

logger = logging.getLogger(__name__)

# Proportions below this are raised to it before taking logs: a bin empty on one side would
# otherwise make PSI infinite. 1e-4 keeps one empty decile's contribution near 0.1 * ln(1000)
# ≈ 0.69, large enough to count as drift, finite enough to plot.
DEFAULT_PSI_EPSILON = 1e-4

_PI_SQUARED = math.pi**2
_PI_FOUR = math.pi**4
_PI_SIX = math.pi**6
_SQRT2PI = math.sqrt(2.0 * math.pi)
_SQRT3 = math.sqrt(3.0)
# Beyond n*x^2 = 18 the Kolmogorov tail is below 1e-15: report 0 rather than rounding noise.
_NEGLIGIBLE_NX2 = 18.0
# SciPy switches to exact methods below this effective size; the expansion is for large n.
_PELZ_GOOD_MIN_N = 140


def _as_counts(values: ArrayLike, name: str) -> NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of bin counts, got shape {arr.shape}")
    if arr.size and (not np.all(np.isfinite(arr)) or np.any(arr < 0)):
        raise ValueError(f"{name} must hold finite non-negative counts")
    return arr


def psi(ref_counts: ArrayLike, live_counts: ArrayLike, eps: float = DEFAULT_PSI_EPSILON) -> float:
    """Population stability index between two binnings of the same bins.

    ``PSI = sum_i (q_i - p_i) * ln(q_i / p_i)`` with ``p`` the reference and ``q`` the live
    proportions, each floored at ``eps`` so empty bins stay finite. Returns NaN when either side
    holds no counts (there is nothing to compare, which is not the same as "no drift").
    """
    ref = _as_counts(ref_counts, "ref_counts")
    live = _as_counts(live_counts, "live_counts")
    if ref.shape != live.shape:
        raise ValueError(f"ref_counts and live_counts differ in length: {ref.size} vs {live.size}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    n, m = ref.sum(), live.sum()
    if n <= 0 or m <= 0:
        return math.nan
    p = np.maximum(ref / n, eps)
    q = np.maximum(live / m, eps)
    return float(np.sum((q - p) * np.log(q / p)))


def psi_expected(bins: int, n: float, m: float) -> float:
    """PSI expected with no drift between samples of sizes ``n`` and ``m`` over ``bins`` bins.

    Under the null ``PSI`` is approximately ``(1/n + 1/m) * chi2(bins - 1)``, so its mean is
    ``(bins - 1) * (1/n + 1/m)``; small windows therefore show PSI well above zero by chance.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if n <= 0 or m <= 0:
        return math.nan
    return (bins - 1) * (1.0 / n + 1.0 / m)


def ks_from_cdfs(ref_counts: ArrayLike, live_counts: ArrayLike) -> tuple[float, float]:
    """Two-sample KS statistic from counts over shared fine bins, with its discretisation bound.

    Returns ``(stat, bound)``. ``stat`` is the largest CDF gap at the bin edges, a lower bound of
    the statistic of the raw samples; inside bin ``i`` the gap can grow by at most
    ``min(p_i, q_i)`` (the smaller of the two bin masses), so the raw statistic lies in
    ``[stat, stat + bound]`` with ``bound = max_i min(p_i, q_i)`` (at most one fine bin's mass).
    NaN for both when a side is empty.
    """
    ref = _as_counts(ref_counts, "ref_counts")
    live = _as_counts(live_counts, "live_counts")
    if ref.shape != live.shape:
        raise ValueError(f"ref_counts and live_counts differ in length: {ref.size} vs {live.size}")
    n, m = ref.sum(), live.sum()
    if n <= 0 or m <= 0:
        return math.nan, math.nan
    p = ref / n
    q = live / m
    stat = float(np.max(np.abs(np.cumsum(p) - np.cumsum(q))))
    bound = float(np.max(np.minimum(p, q)))
    return stat, bound


def _pelz_good_cdf(n: float, x: float) -> float:
    """P(D_n <= x) for the one-sample Kolmogorov statistic, Pelz-Good (1976) expansion.

    Ported from the formulation SciPy uses for large ``n`` (Simard & L'Ecuyer 2011): the
    Kolmogorov limit plus corrections in powers of ``n**-0.5``.
    """
    z = math.sqrt(n) * x
    z2, z3, z4, z6 = z * z, z**3, z**4, z**6
    qlog = -_PI_SQUARED / 8.0 / z2
    if qlog < -700.0:
        return 0.0
    q = math.exp(qlog)
    k1a, k1b = -z2, _PI_SQUARED / 4.0
    k2a = 6.0 * z6 + 2.0 * z4
    k2b = (2.0 * z4 - 5.0 * z2) * _PI_SQUARED / 4.0
    k2c = _PI_FOUR * (1.0 - 2.0 * z2) / 16.0
    k3d = _PI_SIX * (5.0 - 30.0 * z2) / 64.0
    k3c = _PI_FOUR * (-60.0 * z2 + 212.0 * z4) / 16.0
    k3b = _PI_SQUARED * (135.0 * z4 - 96.0 * z6) / 4.0
    k3a = -30.0 * z6 - 90.0 * z**8
    terms = np.zeros(4)
    maxk = math.ceil(16.0 * z / math.pi)
    for k in range(maxk, 0, -1):  # Horner scheme over odd integers m = 2k - 1
        m = 2 * k - 1
        m2, m4, m6 = m**2, m**4, m**6
        terms *= q ** (8 * k)
        terms += (
            1.0,
            k1a + k1b * m2,
            k2a + k2b * m2 + k2c * m4,
            k3a + k3b * m2 + k3c * m4 + k3d * m6,
        )
    terms *= q * _SQRT2PI
    terms /= np.array([z, 6.0 * z4, 72.0 * z**7, 6480.0 * z**10])
    q2 = math.exp(-_PI_SQUARED / 2.0 / z2)
    ks = np.arange(maxk, 0, -1, dtype=np.float64)
    ks2 = ks**2
    qpow = q2**ks2
    terms[2] += float(np.sum(ks2 * qpow)) * _PI_SQUARED * _SQRT2PI / (-36.0 * z3)
    kspi = math.pi * ks
    sqrt3z = _SQRT3 * z
    terms[3] += float(np.sum((sqrt3z + kspi) * (sqrt3z - kspi) * ks2 * qpow)) * _PI_SQUARED * _SQRT2PI / (216.0 * z6)
    terms /= np.power(float(n), np.arange(4) / 2.0)
    return float(terms.sum())


def kolmogorov_pvalue(stat: float, n: float, m: float) -> float:
    """Asymptotic two-sided p-value of a two-sample KS statistic for sample sizes ``n``, ``m``.

    Like ``scipy.stats.ks_2samp(..., method="asymp")`` the two samples are reduced to the
    effective size ``round(n*m/(n+m))`` and the one-sample Kolmogorov tail is evaluated there.
    NaN when the statistic or a sample is missing.
    """
    if not (math.isfinite(stat) and n > 0 and m > 0):
        return math.nan
    if stat < 0 or stat > 1:
        raise ValueError(f"stat must be in [0, 1], got {stat}")
    en = float(round(n * m / (n + m)))
    if en < 1:
        return 1.0
    if stat <= 0:
        return 1.0
    if stat >= 1:
        return 0.0
    if en * stat * stat >= _NEGLIGIBLE_NX2:
        return 0.0
    if stat >= 0.5 or en <= _PELZ_GOOD_MIN_N:
        # Outside the expansion's comfort zone: the Kolmogorov limit with Stephens' correction
        # (accurate to a few 1e-3, which is ample where samples are this small).
        lam = (math.sqrt(en) + 0.12 + 0.11 / math.sqrt(en)) * stat
        return _kolmogorov_limit_sf(lam)
    return min(1.0, max(0.0, 1.0 - _pelz_good_cdf(en, stat)))


def _kolmogorov_limit_sf(lam: float) -> float:
    """Tail of the Kolmogorov distribution, ``2 sum (-1)^(k-1) exp(-2 k^2 lam^2)``."""
    if lam < 0.2:
        return 1.0
    k = np.arange(1, 101, dtype=np.float64)
    total = 2.0 * float(np.sum((-1.0) ** (k - 1) * np.exp(-2.0 * k * k * lam * lam)))
    return min(1.0, max(0.0, total))


def _as_pvalues(pvalues: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(pvalues, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"pvalues must be 1-D, got shape {arr.shape}")
    finite = arr[np.isfinite(arr)]
    if np.any((finite < 0) | (finite > 1)):
        raise ValueError("pvalues must lie in [0, 1] (NaN marks a test that was not run)")
    return arr


def bonferroni(pvalues: ArrayLike) -> NDArray[np.float64]:
    """Bonferroni-adjusted p-values: ``min(1, p * k)``, ``k`` the number of non-NaN p-values.

    NaN entries (tests that were not run) stay NaN and do not count towards ``k``.
    """
    arr = _as_pvalues(pvalues)
    out = np.full(arr.shape, np.nan)
    ok = np.isfinite(arr)
    out[ok] = np.minimum(1.0, arr[ok] * int(ok.sum()))
    return out


def benjamini_hochberg(pvalues: ArrayLike) -> NDArray[np.float64]:
    """Benjamini-Hochberg adjusted p-values (step-up, false discovery rate).

    ``adj_(i) = min_{j >= i} min(1, p_(j) * k / j)`` over the sorted non-NaN p-values; NaN
    entries stay NaN and do not count towards ``k``. Reject where ``adj <= alpha``.
    """
    arr = _as_pvalues(pvalues)
    out = np.full(arr.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(arr))
    k = ok.size
    if k == 0:
        return out
    order = np.argsort(arr[ok], kind="stable")
    ranked = arr[ok][order] * k / np.arange(1, k + 1)
    adjusted = np.minimum(1.0, np.minimum.accumulate(ranked[::-1])[::-1])
    out[ok[order]] = adjusted
    return out
