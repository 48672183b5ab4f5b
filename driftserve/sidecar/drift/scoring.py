"""Turn one feature's window counts into statistics and entry/clear alert levels.

Decisions are deliberately conservative where binning could mislead: the KS decision uses the
binned statistic, which is a lower bound of the raw-sample statistic, so discretisation can hide a
shift by at most the reported bound but never invents one; PSI levels apply to the PSI in excess
of its no-drift expectation, so small windows do not alert on sampling noise alone.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from driftserve.core.drift_config import DriftConfig
from driftserve.sidecar.drift.profile import FeatureProfile
from driftserve.sidecar.drift.stats import DEFAULT_PSI_EPSILON, kolmogorov_pvalue, ks_from_cdfs, psi, psi_expected

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureReference:
    """What the scorer needs of one feature's reference, precomputed once."""

    name: str
    source: str  # "input" or "output"
    categorical: bool
    counts: NDArray[np.int64]
    n_valid: int
    missing_share: float
    coarse_map: NDArray[np.int64]
    n_coarse: int

    @classmethod
    def from_profile(cls, prof: FeatureProfile, source: str, coarse_bins: int) -> FeatureReference:
        """Precompute the fine-to-coarse bin map (equal reference mass per coarse bin)."""
        counts = prof.counts
        if prof.kind == "categorical" or counts.sum() == 0:
            coarse = np.arange(counts.size, dtype=np.int64)
        else:
            mass = counts / counts.sum()
            midpoints = np.cumsum(mass) - mass / 2.0
            groups = np.minimum((midpoints * coarse_bins).astype(np.int64), coarse_bins - 1)
            coarse = np.unique(groups, return_inverse=True)[1].astype(np.int64)
        return cls(
            name=prof.name,
            source=source,
            categorical=prof.kind == "categorical",
            counts=counts,
            n_valid=prof.n_valid,
            missing_share=prof.missing_share,
            coarse_map=coarse,
            n_coarse=int(coarse.max()) + 1 if coarse.size else 1,
        )


@dataclass
class FeatureScore:
    """Statistics of one feature over one window, before multiple-test correction."""

    psi: float
    psi_expected: float
    ks_statistic: float
    ks_bound: float
    ks_pvalue: float
    missing_share: float
    unseen: int
    rows: int


def score(ref: FeatureReference, counts: NDArray[np.int64], missing: int, unseen: int, rows: int) -> FeatureScore:
    """Statistics of one feature from its live fine-bin counts (padded row of the window)."""
    live = counts[: ref.counts.size]
    m = int(live.sum())
    if ref.categorical:
        # One PSI bin per level plus one for unseen levels, which the reference never has.
        ref_bins = np.append(ref.counts, 0)
        live_bins = np.append(live, unseen)
        value = psi(ref_bins, live_bins, DEFAULT_PSI_EPSILON)
        expected = psi_expected(ref.counts.size, ref.n_valid, m + unseen)
        ks, bound, pvalue = math.nan, math.nan, math.nan
    else:
        value = psi(
            np.bincount(ref.coarse_map, ref.counts, ref.n_coarse),
            np.bincount(ref.coarse_map, live, ref.n_coarse),
            DEFAULT_PSI_EPSILON,
        )
        expected = psi_expected(ref.n_coarse, ref.n_valid, m)
        ks, bound = ks_from_cdfs(ref.counts, live)
        pvalue = kolmogorov_pvalue(ks, ref.n_valid, m)
    return FeatureScore(
        psi=value,
        psi_expected=expected,
        ks_statistic=ks,
        ks_bound=bound,
        ks_pvalue=pvalue,
        missing_share=missing / rows if rows else math.nan,
        unseen=unseen,
        rows=rows,
    )


def _level(value: float, warn: float, alert: float, scale: float) -> int:
    if not math.isfinite(value):
        return 0
    if value >= alert * scale:
        return 2
    return 1 if value >= warn * scale else 0


def levels(s: FeatureScore, p_corrected: float, ref: FeatureReference, cfg: DriftConfig) -> tuple[int, int, list[str]]:
    """``(enter_level, clear_level, reasons)`` for one score; reasons cite the entry thresholds."""
    ratio = cfg.hysteresis.clear_ratio
    reasons: list[str] = []
    excess_psi = s.psi - s.psi_expected if math.isfinite(s.psi_expected) else s.psi
    missing_increase = s.missing_share - ref.missing_share
    unseen_share = s.unseen / s.rows if s.rows else math.nan
    ks_ok = math.isfinite(p_corrected)
    checks = [
        (
            excess_psi,
            cfg.psi.warn,
            cfg.psi.alert,
            f"psi {s.psi:.4f} is {excess_psi:.4f} above the {s.psi_expected:.4f} expected without drift",
        ),
        (
            missing_increase,
            cfg.missing.warn,
            cfg.missing.alert,
            f"missing share {s.missing_share:.4f} vs reference {ref.missing_share:.4f}",
        ),
        (
            unseen_share,
            cfg.unseen.warn,
            cfg.unseen.alert,
            f"{s.unseen} values ({unseen_share:.4f} of rows) are categories absent from the reference",
        ),
    ]
    enter = hold = 0
    for value, warn, alert, text in checks:
        lvl = _level(value, warn, alert, 1.0)
        enter = max(enter, lvl)
        hold = max(hold, _level(value, warn, alert, ratio))
        if lvl:
            reasons.append(f"{text} (>= {'alert' if lvl == 2 else 'warn'} {alert if lvl == 2 else warn})")
    if ks_ok and p_corrected < cfg.ks.alpha and s.ks_statistic >= cfg.ks.min_statistic:
        enter = 2
        reasons.append(
            f"ks {s.ks_statistic:.4f} (+<= {s.ks_bound:.4f} binning) >= {cfg.ks.min_statistic} with corrected "
            f"p {p_corrected:.3g} < alpha {cfg.ks.alpha}"
        )
    if ks_ok and p_corrected < cfg.ks.alpha / ratio and s.ks_statistic >= cfg.ks.min_statistic * ratio:
        hold = 2
    return enter, max(enter, hold), reasons
