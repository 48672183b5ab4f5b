"""The side-by-side Markdown summary that `run_all` writes (`slo.md`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from driftserve.bench.runner import RunResult
from driftserve.bench.sweep import MaxRateSearch

logger = logging.getLogger(__name__)


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0 or a != a or b != b:
        return "–"
    return f"{a / b:.2f}×"


def _errors(result: RunResult) -> str:
    return str(sum(result.errors.values()))


def _side_by_side(results: Sequence[RunResult], labels: Sequence[str], unit: str) -> list[str]:
    """One row per load level: candidate and baseline throughput and latency, with ratios."""
    cand, base = labels
    by_level: dict[float, dict[str, RunResult]] = {}
    for r in results:
        by_level.setdefault(r.level, {})[r.label] = r
    lines = [
        f"| {unit} | {cand} rps | {base} rps | rps ratio | {cand} p50 ms | {base} p50 ms | "
        f"{cand} p99 ms | {base} p99 ms | p99 ratio ({base}/{cand}) | errors ({cand}/{base}) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for level in sorted(by_level):
        row = by_level[level]
        c, b = row.get(cand), row.get(base)
        if c is None or b is None:
            continue
        lines.append(
            f"| {level:g} | {c.throughput_rps:.0f} | {b.throughput_rps:.0f} | "
            f"{_ratio(c.throughput_rps, b.throughput_rps)} | {c.latency_ms['p50']:.3f} | "
            f"{b.latency_ms['p50']:.3f} | {c.latency_ms['p99']:.3f} | {b.latency_ms['p99']:.3f} | "
            f"{_ratio(b.latency_ms['p99'], c.latency_ms['p99'])} | {_errors(c)}/{_errors(b)} |"
        )
    return lines


def _breakdown(results: Sequence[RunResult], label: str) -> list[str]:
    rows = [r for r in results if r.label == label and r.server is not None]
    if not rows:
        return [f"({label} reported no ModelStatistics.)"]
    lines = [
        "| load | queue µs | compute_input µs | compute_infer µs | compute_output µs | rows / execution |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r.server
        assert s is not None
        lines.append(
            f"| c={r.level:g} | {s.queue_us:.0f} | {s.compute_input_us:.0f} | "
            f"{s.compute_infer_us:.0f} | {s.compute_output_us:.0f} | "
            f"{s.avg_batch_size:.2f} |"
        )
    return lines


def summary_markdown(
    measured: Sequence[dict[str, Any]], info: dict[str, Any], command: str, labels: Sequence[str]
) -> str:
    """Every model's sweeps side by side, the max-rate searches and the c=1 medians."""
    cand, base = labels
    out = [
        f"# {cand} vs {base}: latency SLOs, side by side",
        "",
        f"- command: `{command}`",
        f"- machine: {info['nproc']} cores, {info['cpu']}, Python {info['python']}",
        f"- date (UTC): {info['date_utc']}",
        "- every load level ran against both servers back to back (interleaved); ratios are "
        "within one run. Open-loop latency counts from each request's scheduled send time.",
        "",
    ]
    max_rows = ["| model | SLO | " + f"{cand} max rps | {base} max rps | ratio |", "|---|---|---|---|---|"]
    p50_rows = [f"| model | {cand} p50 ms (c=1) | {base} p50 ms (c=1) | ratio ({base}/{cand}) |", "|---|---|---|---|"]
    for m in measured:
        out += [f"## {m['model']}", "", "### Closed loop", ""]
        out += _side_by_side(m["closed"], labels, "concurrency")
        out += ["", "### Open loop (constant rate)", ""]
        out += _side_by_side(m["open"], labels, "offered rps")
        out += ["", f"### {cand} server-side breakdown (ModelStatistics, per request)", ""]
        out += _breakdown(m["closed"], cand)
        out += ["", f"![latency vs throughput](slo_{m['model']}.png)", ""]
        searches: list[MaxRateSearch] = m["max_rate"]
        for slo in dict.fromkeys(s.slo for s in searches):
            chosen = [s for s in searches if s.slo == slo]
            found = {s.label: s.max_rate_rps for s in chosen}
            fmt = {
                s.label: "none" if s.max_rate_rps is None else f"{'≥' if not s.bounded else ''}{s.max_rate_rps:.0f}"
                for s in chosen
            }
            exact = all(s.bounded for s in chosen)
            ratio = _ratio(found.get(cand), found.get(base)) if exact else "–"
            max_rows.append(f"| {m['model']} | {slo} | {fmt.get(cand, '–')} | {fmt.get(base, '–')} | {ratio} |")
        ones = {r.label: r for r in m["closed"] if r.level == 1}
        if cand in ones and base in ones:
            c, b = ones[cand].latency_ms["p50"], ones[base].latency_ms["p50"]
            p50_rows.append(f"| {m['model']} | {c:.3f} | {b:.3f} | {_ratio(b, c)} |")
    out += [
        "## Highest open-loop rate meeting the SLO",
        "",
        *max_rows,
        "",
        "(searched by doubling then bisecting, a bounded number of runs; '≥' means no rate "
        "tried failed, 'none' that even the lowest rate tried failed)",
        "",
        "## Median latency at concurrency 1",
        "",
        *p50_rows,
        "",
    ]
    return "\n".join(out)
