"""The built-in ``/dashboard`` page: plain HTML with inline SVG bars, no scripts, no CDN.

Per model: its overall status, rows and batches seen, open alerts with their reasons, and one row
per feature with PSI (excess over the no-drift expectation, against the alert threshold) and KS
bars coloured by status, window sizes and missing shares; then the shadow comparison. The page
refreshes itself with a meta tag, so it works from an air-gapped browser.
"""

from __future__ import annotations

import html
import math
import time

from driftserve.core.drift_config import DriftConfig
from driftserve.sidecar.drift.detector import SLIDING, FeatureWindowReport
from driftserve.sidecar.shadow import ShadowStats
from driftserve.sidecar.state import ModelReport
from driftserve.sidecar.views import STATUS_ORDER, overall_status

COLOURS = {"ok": "#2e7d32", "warn": "#f9a825", "alert": "#c62828", "insufficient": "#9e9e9e"}
BAR_WIDTH = 160
BAR_HEIGHT = 12
REFRESH_S = 5

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#212121}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
th,td{padding:.2rem .6rem;text-align:left;border-bottom:1px solid #e0e0e0;font-size:.9rem}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{color:#fff;border-radius:.3rem;padding:.05rem .4rem;font-size:.8rem}
section{margin-bottom:2rem}
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "–"


def _badge(status: str) -> str:
    return f'<span class="badge" style="background:{COLOURS.get(status, "#616161")}">{_esc(status)}</span>'


def bar(value: float, full_scale: float, status: str, label: str, tick_at: float = 0.5) -> str:
    """A horizontal SVG bar: ``value`` against ``full_scale`` (clipped), with a threshold tick."""
    fraction = min(max(value / full_scale, 0.0), 1.0) if math.isfinite(value) and full_scale > 0 else 0.0
    tick = round(BAR_WIDTH * tick_at)
    return (
        f'<svg width="{BAR_WIDTH}" height="{BAR_HEIGHT}" role="img" aria-label="{_esc(label)}">'
        f'<rect width="{BAR_WIDTH}" height="{BAR_HEIGHT}" fill="#eeeeee"/>'
        f'<rect width="{fraction * BAR_WIDTH:.1f}" height="{BAR_HEIGHT}" fill="{COLOURS.get(status, "#616161")}"/>'
        f'<line x1="{tick}" x2="{tick}" y1="0" y2="{BAR_HEIGHT}" stroke="#212121" stroke-width="1"/></svg>'
    )


def _feature_row(item: FeatureWindowReport, config: DriftConfig | None) -> str:
    # Bars are scaled so the alert threshold sits at the midpoint tick.
    psi_alert = config.psi.alert if config else 0.25
    ks_min = config.ks.min_statistic if config else 0.05
    excess = item.psi - item.psi_expected if math.isfinite(item.psi_expected) else item.psi
    title = "; ".join(item.reasons)
    return (
        f'<tr title="{_esc(title)}"><td>{_esc(item.feature)}</td><td>{_esc(item.source)}</td>'
        f"<td>{_badge(item.status)}</td>"
        f'<td>{bar(excess, 2 * psi_alert, item.status, f"psi {item.feature}")}</td><td class="n">{_num(item.psi)}</td>'
        f"<td>{bar(item.ks_statistic, 2 * ks_min, item.status, f'ks {item.feature}')}</td>"
        f'<td class="n">{_num(item.ks_statistic)}</td><td class="n">{_num(item.ks_pvalue_corrected, 3)}</td>'
        f'<td class="n">{_num(item.missing_share, 3)}</td><td class="n">{item.window_rows}</td></tr>'
    )


def _shadow_section(stats: ShadowStats) -> str:
    agreement = stats.agreement if math.isfinite(stats.agreement) else math.nan
    status = "ok" if not math.isfinite(agreement) or agreement >= 0.99 else ("warn" if agreement >= 0.95 else "alert")
    rows = [
        ("versions", f"primary {_esc(stats.primary_version or '?')} vs shadow {_esc(stats.shadow_version)}"),
        ("rows compared", str(stats.rows)),
        ("agreement", f"{bar(agreement, 1.0, status, 'agreement', 0.95)} {_num(agreement)}"),
        ("mean / max |delta|", f"{_num(stats.mean_abs_delta, 6)} / {_num(stats.max_abs_delta, 6)}"),
        (
            "inference p50 primary / shadow",
            f"{_num(stats.primary_inference_p50_s * 1e3, 3)} ms / {_num(stats.shadow_latency_p50_s * 1e3, 3)} ms",
        ),
        ("primary end to end p50 (server)", f"{_num(stats.primary_latency_p50_s * 1e3, 3)} ms"),
        ("errors", str(stats.errors)),
    ]
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<h3>Shadow comparison</h3><table>{body}</table>"


def _model_section(report: ModelReport, config: DriftConfig | None, window: str) -> str:
    items = sorted(
        (i for i in report.items if i.window == window),
        key=lambda i: (STATUS_ORDER.get(i.status, 9), i.source, i.feature),
    )
    alerts = [i for i in report.items if i.status == "alert"]
    parts = [
        f'<section id="{_esc(report.model)}"><h2>{_esc(report.model)} {_badge(overall_status(report))}</h2>',
        f"<p>{report.rows_seen} rows, {report.batches_seen} batches seen; {_esc(window)} window "
        f"{items[0].window_rows if items else 0} rows.</p>",
    ]
    if alerts:
        lines = "".join(
            f"<li><b>{_esc(a.feature)}</b> ({_esc(a.window)}): {_esc('; '.join(a.reasons))}</li>" for a in alerts
        )
        parts.append(f"<h3>Alerts</h3><ul>{lines}</ul>")
    if items:
        head = (
            "<tr><th>feature</th><th>kind</th><th>status</th><th>PSI excess</th><th>PSI</th><th>KS</th>"
            "<th>KS</th><th>p (corr.)</th><th>missing</th><th>rows</th></tr>"
        )
        parts.append(f"<table>{head}{''.join(_feature_row(i, config) for i in items)}</table>")
    if report.shadow is not None:
        parts.append(_shadow_section(report.shadow))
    parts.append("</section>")
    return "".join(parts)


def render_dashboard(models: list[tuple[ModelReport, DriftConfig | None]], window: str = SLIDING) -> str:
    """The whole page for ``models`` (report and drift config), showing ``window`` per feature."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    nav = " · ".join(f'<a href="#{_esc(r.model)}">{_esc(r.model)}</a> {_badge(overall_status(r))}' for r, _ in models)
    sections = "".join(_model_section(r, c, window) for r, c in models) or "<p>No monitored models.</p>"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_S}">'
        f"<title>driftserve drift</title><style>{_STYLE}</style></head><body>"
        f"<h1>driftserve drift</h1><p>{stamp} · bars: tick = alert threshold · {nav}</p>{sections}</body></html>"
    )
