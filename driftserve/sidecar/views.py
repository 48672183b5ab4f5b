"""Plain-data views of a report: the JSON document of ``/api/drift/<model>`` and its helpers.

Strict JSON has no NaN, so non-finite statistics (nothing measured yet) become ``null``.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from driftserve.sidecar.drift.detector import WINDOWS, FeatureWindowReport
from driftserve.sidecar.state import ModelReport

STATUS_ORDER = {"alert": 0, "warn": 1, "ok": 2, "insufficient": 3}


def finite_or_none(value: Any) -> Any:
    """``None`` for NaN and infinities, the value otherwise."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: finite_or_none(v) for k, v in obj.items()}


def _feature_json(item: FeatureWindowReport) -> dict[str, Any]:
    doc = asdict(item)
    doc["kind"] = doc.pop("source")  # same name as the FeatureDrift message field
    return _clean(doc)


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
        "features": [_feature_json(i) for i in items],
        "shadow": _clean(asdict(report.shadow)) if report.shadow is not None else None,
        **({"fleet": report.fleet.to_json()} if report.fleet is not None else {}),
    }


def overall_status(report: ModelReport) -> str:
    """The worst status of any item (``insufficient`` only if nothing is judged yet)."""
    if not report.items:
        return "ok" if report.shadow is not None else "insufficient"
    return min((i.status for i in report.items), key=lambda s: STATUS_ORDER.get(s, len(STATUS_ORDER)))
