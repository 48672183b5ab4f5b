"""Run results as JSON, a Markdown table and a latency-versus-throughput PNG."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from driftserve.bench.runner import RunResult

logger = logging.getLogger(__name__)


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def markdown_table(results: Sequence[RunResult]) -> str:
    """One row per run: load, throughput, percentiles, errors, server breakdown, generator CPU."""
    head = (
        "| target | mode | load | rps | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors "
        "| srv queue µs | srv infer µs | rows/exec | gen CPU |"
    )
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        load = f"c={r.level:g}" if r.mode == "closed" else f"{r.level:g} rps"
        if r.streaming:
            load += " stream"
        errors = ", ".join(f"{k}={v}" for k, v in r.errors.items()) or "0"
        s = r.server
        lat = {k: "–" if v != v else f"{v:.3f}" for k, v in r.latency_ms.items()}  # NaN: none ok
        rows.append(
            f"| {r.label} | {r.mode} | {load} | {r.throughput_rps:.0f} | {lat['p50']} | "
            f"{lat['p90']} | {lat['p99']} | {lat['p99.9']} | {lat['max']} | "
            f"{errors} | {f'{s.queue_us:.0f}' if s else '–'} | "
            f"{f'{s.compute_infer_us:.0f}' if s else '–'} | "
            f"{f'{s.avg_batch_size:.1f}' if s else '–'} | {r.loadgen_cpu_cores:.2f} |"
        )
    return "\n".join(rows) + "\n"


def plot_latency(results: Sequence[RunResult], path: str | Path, title: str) -> None:
    """p50 and p99 against achieved throughput, one line pair per target and mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    fig, ax = plt.subplots(figsize=(8, 5))
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for r in results:
        groups.setdefault((r.label, r.mode), []).append(r)
    for index, ((label, mode), runs) in enumerate(groups.items()):
        runs = sorted(runs, key=lambda r: r.level)
        xs = [r.throughput_rps for r in runs]
        for pct, style in (("p50", "--"), ("p99", "-")):
            ax.plot(
                xs,
                [r.latency_ms[pct] for r in runs],
                style,
                marker="o",
                color=f"C{index}",
                label=f"{label} {mode} {pct}",
            )
    ax.set_xlabel("achieved throughput (requests/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
