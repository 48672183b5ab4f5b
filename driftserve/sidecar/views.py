"""Plain-data views of a report: the JSON document of ``/api/drift/<model>`` and its helpers.

Strict JSON has no NaN, so non-finite statistics (nothing measured yet) become ``null``. The
alert scores put each test on one scale, 1.0 = its alert threshold, so the dashboard's bars cross
their tick exactly when that test alerts.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from driftserve.core.drift_config import DriftConfig
from driftserve.sidecar.drift.detector import SLIDING, WINDOWS, FeatureWindowReport
from driftserve.sidecar.state import ModelReport

STATUS_ORDER = {"alert": 0, "warn": 1, "ok": 2, "insufficient": 3}


def finite_or_none(value: Any) -> Any:
    """``None`` for NaN and infinities, the value otherwise."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: finite_or_none(v) for k, v in obj.items()}


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """``"1 row"``, ``"2 rows"``, ``"0 batches"`` (``plural_noun`` where adding an s is wrong)."""
    return f"{count:,} {noun if count == 1 else (plural_noun or noun + 's')}"


def psi_excess(item: FeatureWindowReport) -> float:
    """PSI above its no-drift expectation: the quantity the PSI thresholds judge."""
    return item.psi - item.psi_expected if math.isfinite(item.psi_expected) else item.psi


def psi_alert_score(item: FeatureWindowReport, config: DriftConfig) -> float:
    """PSI excess as a multiple of the PSI alert threshold (>= 1: PSI alone raises an alert)."""
    return psi_excess(item) / config.psi.alert


def ks_alert_score(item: FeatureWindowReport, config: DriftConfig) -> float:
    """How far KS is towards its alert, 1.0 = alert; NaN where KS was not computed.

    KS alerts when the corrected p-value is below ``alpha`` *and* the statistic is at least
    ``min_statistic``: the score is the smaller of ``statistic / min_statistic`` and
    ``log(p) / log(alpha)``, so it is >= 1 exactly when both hold.
    """
    p, stat = item.ks_pvalue_corrected, item.ks_statistic
    if not (math.isfinite(p) and math.isfinite(stat)):
        return math.nan
    by_size = stat / config.ks.min_statistic if config.ks.min_statistic > 0 else math.inf
    by_p = math.log(p) / math.log(config.ks.alpha) if p > 0 else math.inf
    return min(by_size, by_p)


def _feature_json(item: FeatureWindowReport, history: tuple[float, ...] | None) -> dict[str, Any]:
    doc = asdict(item)
    doc["kind"] = doc.pop("source")  # same name as the FeatureDrift message field
    doc = _clean(doc)
    if history is not None:
        doc["psi_excess_history"] = [finite_or_none(v) for v in history]
    return doc


def report_to_json(report: ModelReport, windows: tuple[str, ...] = WINDOWS) -> dict[str, Any]:
    """The JSON document of one model's report, items limited to ``windows``."""
    items = [i for i in report.items if i.window in windows]
    return {
        "model": report.model,
        "generated_unix_s": report.generated_unix_s,
        "rows_seen": report.rows_seen,
        "batches_seen": report.batches_seen,
        "status": overall_status(report),
        "alerts": [
            {"feature": i.feature, "window": i.window, "reasons": i.reasons} for i in items if i.status == "alert"
        ],
        "features": [
            _feature_json(i, report.psi_history.get((i.source, i.feature)) if i.window == SLIDING else None)
            for i in items
        ],
        "shadow": _clean(asdict(report.shadow)) if report.shadow is not None else None,
        **({"fleet": report.fleet.to_json()} if report.fleet is not None else {}),
        "mirrored_traffic": _clean(asdict(report.traffic)) if report.traffic is not None else None,
    }


def overall_status(report: ModelReport) -> str:
    """The worst status of any item (``insufficient`` only if nothing is judged yet)."""
    if not report.items:
        return "ok" if report.shadow is not None else "insufficient"
    return min((i.status for i in report.items), key=lambda s: STATUS_ORDER.get(s, len(STATUS_ORDER)))
