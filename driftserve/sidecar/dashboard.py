"""The built-in ``/dashboard`` page: plain HTML with inline SVG, no scripts, no CDN.

Per model: its overall status, the server traffic the sidecar sees (mirrored request rate and the
server's latency of those requests), open alerts with their reasons, one row per feature (a PSI
sparkline over the last evaluations, PSI and KS bars, window size, missing share), then the
shadow comparison. Every bar is scaled so that its test's alert threshold sits at the same tick
(see ``views.psi_alert_score`` and ``views.ks_alert_score``): a bar crosses the tick exactly
when that test alerts. The page refreshes itself with a meta tag, so it works from an air-gapped
browser. Each part is one small ``_render`` function returning an HTML fragment.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Mapping, Sequence

from driftserve.core.drift_config import DriftConfig
from driftserve.sidecar.drift.detector import SLIDING, FeatureWindowReport
from driftserve.sidecar.shadow import ShadowStats
from driftserve.sidecar.state import ModelReport
from driftserve.sidecar.traffic import RATE_WINDOW_S, TrafficSnapshot
from driftserve.sidecar.views import (
    STATUS_ORDER,
    ks_alert_score,
    overall_status,
    plural,
    psi_alert_score,
)

COLOURS = {"ok": "#2e7d32", "warn": "#f9a825", "alert": "#c62828", "insufficient": "#9e9e9e"}
NEUTRAL = "#1565c0"
BAR_WIDTH = 140
BAR_HEIGHT = 12
# Bars show an alert score (1.0 = threshold) on a 0..2 scale: the threshold tick is the midpoint.
BAR_FULL_SCALE = 2.0
SPARK_WIDTH = 150
SPARK_HEIGHT = 24
REFRESH_S = 5
# Shadow agreement levels of the page's badge (the Prometheus rule warns below 0.95 too).
AGREEMENT_OK = 0.99
AGREEMENT_WARN = 0.95

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#212121}
h1{margin:.2rem 0}h2{margin:1rem 0 .3rem}h3{margin:1rem 0 .3rem;font-size:1rem}
table{border-collapse:collapse;margin:.3rem 0 1rem}
th,td{padding:.2rem .5rem;text-align:left;border-bottom:1px solid #e0e0e0;font-size:.85rem}
th{font-weight:600;background:#fafafa}td.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{color:#fff;border-radius:.3rem;padding:.05rem .4rem;font-size:.8rem}
.note{color:#616161;font-size:.8rem}section{margin-bottom:2rem}svg{vertical-align:middle}
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "–"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms" if math.isfinite(seconds) else "–"


def _colour(status: str) -> str:
    return COLOURS.get(status, "#616161")


def _badge(status: str) -> str:
    return (
        f'<span class="badge" data-status="{_esc(status)}" style="background:{_colour(status)}">{_esc(status)}</span>'
    )


def bar(value: float, full_scale: float, status: str, label: str, tick_at: float = 0.5) -> str:
    """A horizontal SVG bar: ``value`` against ``full_scale`` (clipped), with a tick at ``tick_at``."""
    fraction = min(max(value / full_scale, 0.0), 1.0) if math.isfinite(value) and full_scale > 0 else 0.0
    tick = round(BAR_WIDTH * tick_at)
    return (
        f'<svg width="{BAR_WIDTH}" height="{BAR_HEIGHT}" role="img" aria-label="{_esc(label)}">'
        f'<rect width="{BAR_WIDTH}" height="{BAR_HEIGHT}" fill="#eeeeee"/>'
        f'<rect width="{fraction * BAR_WIDTH:.1f}" height="{BAR_HEIGHT}" fill="{_colour(status)}"/>'
        f'<line x1="{tick}" x2="{tick}" y1="0" y2="{BAR_HEIGHT}" stroke="#212121" stroke-width="1"/></svg>'
    )


def score_bar(score: float, label: str) -> str:
    """A bar of an alert score (1.0 = alert threshold, at the midpoint tick), red past the tick."""
    status = "insufficient" if not math.isfinite(score) else ("alert" if score >= 1.0 else "ok")
    return bar(score, BAR_FULL_SCALE, status, label, 1.0 / BAR_FULL_SCALE)


def sparkline(values: Sequence[float], label: str, threshold: float | None = None, colour: str = NEUTRAL) -> str:
    """An SVG line of ``values`` (oldest first; NaN leaves a gap), with a dashed ``threshold`` line."""
    finite = [v for v in values if math.isfinite(v)]
    top = max([*finite, *([threshold * 1.25] if threshold else []), 1e-12])
    bottom = min([*finite, 0.0])
    span = top - bottom
    step = SPARK_WIDTH / max(len(values) - 1, 1)

    def y(v: float) -> float:
        return SPARK_HEIGHT - 2 - (v - bottom) / span * (SPARK_HEIGHT - 4)

    segments: list[list[str]] = [[]]
    for i, v in enumerate(values):
        if math.isfinite(v):
            segments[-1].append(f"{i * step:.1f},{y(v):.1f}")
        elif segments[-1]:
            segments.append([])
    parts = [f'<svg width="{SPARK_WIDTH}" height="{SPARK_HEIGHT}" role="img" aria-label="{_esc(label)}">']
    parts.append(f'<rect width="{SPARK_WIDTH}" height="{SPARK_HEIGHT}" fill="#fafafa"/>')
    if threshold is not None:
        t = f"{y(threshold):.1f}"
        parts.append(f'<line x1="0" x2="{SPARK_WIDTH}" y1="{t}" y2="{t}" stroke="#c62828" stroke-dasharray="3,2"/>')
    for points in segments:
        if len(points) > 1:
            parts.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        elif points:
            x0, y0 = points[0].split(",")
            parts.append(f'<circle cx="{x0}" cy="{y0}" r="1.5" fill="{colour}"/>')
    parts.append("</svg>")
    return "".join(parts)


def _feature_row(item: FeatureWindowReport, config: DriftConfig, history: Sequence[float]) -> str:
    name = item.feature
    psi_score, ks_score = psi_alert_score(item, config), ks_alert_score(item, config)
    trend = sparkline(history, f"psi excess history {name}", config.psi.alert, _colour(item.status)) if history else ""
    return (
        f'<tr data-feature="{_esc(name)}" data-kind="{_esc(item.source)}" data-status="{_esc(item.status)}" '
        f'title="{_esc("; ".join(item.reasons))}"><td>{_esc(name)}</td><td>{_esc(item.source)}</td>'
        f"<td>{_badge(item.status)}</td><td>{trend}</td>"
        f"<td>{score_bar(psi_score, f'psi vs alert {name}')}</td>"
        f'<td class="n">{_num(item.psi)}</td><td class="n">{_num(item.psi_expected)}</td>'
        f"<td>{score_bar(ks_score, f'ks vs alert {name}')}</td>"
        f'<td class="n">{_num(item.ks_statistic)}</td><td class="n">{_num(item.ks_pvalue_corrected, 3)}</td>'
        f'<td class="n">{_num(item.missing_share, 3)}</td><td class="n">{item.window_rows:,}</td></tr>'
    )


_FEATURE_HEAD = (
    "<tr><th>feature</th><th>kind</th><th>status</th><th>PSI excess, last evaluations</th>"
    "<th>PSI vs alert</th><th>PSI</th><th>PSI expected</th><th>KS vs alert</th><th>KS statistic</th>"
    "<th>KS p (corrected)</th><th>missing share</th><th>rows in window</th></tr>"
)


def _feature_table(
    items: list[FeatureWindowReport], config: DriftConfig, history: Mapping[tuple[str, str], Sequence[float]]
) -> str:
    rows = "".join(_feature_row(i, config, history.get((i.source, i.feature), ())) for i in items)
    return f'<table class="features">{_FEATURE_HEAD}{rows}</table>'


def _alerts_section(alerts: list[FeatureWindowReport]) -> str:
    if not alerts:
        return ""
    lines = "".join(
        f'<li data-alert="{_esc(a.feature)}"><b>{_esc(a.feature)}</b> ({_esc(a.window)} window): '
        f"{_esc('; '.join(a.reasons))}</li>"
        for a in alerts
    )
    return f'<h3>{plural(len(alerts), "alert")}</h3><ul class="alerts">{lines}</ul>'


def _traffic_section(traffic: TrafficSnapshot, history: Sequence[tuple[float, float]]) -> str:
    rates = [r for r, _ in history]
    p99s = [p for _, p in history]
    rows = [
        (
            f"mirrored requests/s (last {RATE_WINDOW_S:.0f} s)",
            f"{_num(traffic.requests_per_s, 1)} {sparkline(rates, 'mirrored request rate history')}",
        ),
        ("mirrored rows/s", _num(traffic.rows_per_s, 1)),
        (
            "server latency p50 / p99",
            f"{_ms(traffic.latency_p50_s)} / {_ms(traffic.latency_p99_s)} {sparkline(p99s, 'p99 latency history')}",
        ),
        (
            "mirrored since start",
            f"{plural(traffic.requests_total, 'request')}, {plural(traffic.rows_total, 'row')}",
        ),
    ]
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    note = (
        "Measured by the server for each request it mirrored to this sidecar (receipt to response ready); "
        "a sampling or dropping mirror shows less than the full traffic: the server's own metrics have it all."
    )
    return f'<h3>Server traffic seen by the sidecar</h3><table class="traffic">{body}</table><p class="note">{note}</p>'


def _shadow_section(stats: ShadowStats) -> str:
    agreement = stats.agreement
    status = (
        "ok"
        if not math.isfinite(agreement) or agreement >= AGREEMENT_OK
        else ("warn" if agreement >= AGREEMENT_WARN else "alert")
    )
    # Like with like: both versions' bare inference, timed here on the same batches; the primary's
    # end-to-end server time (queue, batching, transport) on a row of its own.
    inference = (
        f"{_ms(stats.primary_inference_p50_s)} / {_ms(stats.shadow_latency_p50_s)} (p99 "
        f"{_ms(stats.primary_inference_p99_s)} / {_ms(stats.shadow_latency_p99_s)})"
    )
    rows = [
        ("versions", f"primary {_esc(stats.primary_version or '?')} vs shadow {_esc(stats.shadow_version)}"),
        ("rows compared", f"{stats.rows:,}"),
        ("agreement", f"{bar(agreement, 1.0, status, 'agreement', AGREEMENT_WARN)} {_num(agreement)} {_badge(status)}"),
        ("mean / max |delta| of float outputs", f"{_num(stats.mean_abs_delta, 6)} / {_num(stats.max_abs_delta, 6)}"),
        ("inference p50: primary / shadow (both timed in the sidecar)", inference),
        ("primary end to end p50 (server: queue, batch, inference)", _ms(stats.primary_latency_p50_s)),
        ("shadow errors", plural(stats.errors, "failed batch", "failed batches")),
    ]  # fmt: skip
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<h3>Shadow comparison</h3><table class="shadow">{body}</table>'


def _summary(report: ModelReport, items: list[FeatureWindowReport], window: str) -> str:
    inputs = sum(1 for i in items if i.source == "input")
    outputs = len(items) - inputs
    monitored = plural(inputs, "feature") + (f" and {plural(outputs, 'output')}" if outputs else "")
    window_rows = max((i.window_rows for i in items), default=0)
    return (
        f"<p>{plural(report.rows_seen, 'row')} in {plural(report.batches_seen, 'batch', 'batches')} seen; "
        f"{monitored} monitored; {_esc(window)} window: {plural(window_rows, 'row')}.</p>"
    )


def _model_section(report: ModelReport, config: DriftConfig | None, window: str) -> str:
    items = sorted(
        (i for i in report.items if i.window == window),
        key=lambda i: (STATUS_ORDER.get(i.status, 9), i.source, i.feature),
    )
    parts = [
        f'<section id="{_esc(report.model)}" data-model="{_esc(report.model)}">'
        f"<h2>{_esc(report.model)} {_badge(overall_status(report))}</h2>",
        _summary(report, items, window),
    ]
    if report.fleet is not None:
        parts.append(report.fleet.to_html())
    if report.traffic is not None:
        parts.append(_traffic_section(report.traffic, report.traffic_history))
    parts.append(_alerts_section([i for i in report.items if i.status == "alert"]))
    if items and config is not None:
        parts.append(_feature_table(items, config, report.psi_history if window == SLIDING else {}))
    if report.shadow is not None:
        parts.append(_shadow_section(report.shadow))
    parts.append("</section>")
    return "".join(parts)


def _legend(models: list[tuple[ModelReport, DriftConfig | None]]) -> str:
    nav = " · ".join(f'<a href="#{_esc(r.model)}">{_esc(r.model)}</a> {_badge(overall_status(r))}' for r, _ in models)
    return (
        f"<p>{plural(len(models), 'monitored model')}: {nav}</p>"
        '<p class="note">Bars: the tick is the alert threshold, and a bar crosses it exactly when that test '
        "alerts. PSI vs alert = PSI above its no-drift expectation / the PSI alert level; KS vs alert = the "
        "smaller of statistic / min_statistic and log p / log alpha (KS alerts when both reach 1). "
        "Sparklines: PSI excess over the last evaluations, the dashed line is the PSI alert level.</p>"
    )


def render_dashboard(models: list[tuple[ModelReport, DriftConfig | None]], window: str = SLIDING) -> str:
    """The whole page for ``models`` (report and drift config), showing ``window`` per feature."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    sections = "".join(_model_section(r, c, window) for r, c in models) or "<p>No monitored models.</p>"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_S}">'
        f"<title>driftserve drift</title><style>{_STYLE}</style></head><body>"
        f'<h1>driftserve drift</h1><p class="note">{stamp} · {_esc(window)} window · refreshes every '
        f"{REFRESH_S} s</p>{_legend(models)}{sections}</body></html>"
    )
