"""The peers benchmark's report: per-round ratios and the Markdown tables of ``peers.md``."""

from __future__ import annotations

from typing import Any

from benchmarks.common import markdown_table
from benchmarks.perf_analyzer_runner import nan_median

Runs = dict[str, dict[str, list[dict[str, float]]]]  # server -> clients -> one result per round
LABELS = {
    "driftserve": "driftserve",
    "driftserve-slo": "driftserve, only slo_p99_ms: 20",
    "triton": "Triton (Python backend)",
    "pytriton": "PyTriton",
    "mlserver": "MLServer",
    "naive": "naive (floor)",
}


def _ratio(a: float, b: float) -> float:
    return a / b if a == a and b == b and b > 0 else float("nan")


def ratios(runs: Runs, base: str) -> dict[str, dict[str, dict[str, float]]]:
    """peer -> clients -> median over rounds of the within-round ratios ``base`` / peer of throughput
    and of p99 (both servers saw the same machine state in one round), and of CPU per inference."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for peer, by_clients in runs.items():
        if peer == base:
            continue
        for clients, peer_runs in by_clients.items():
            base_runs = runs.get(base, {}).get(clients, [])
            pairs = list(zip(base_runs, peer_runs))
            out.setdefault(peer, {})[clients] = {
                key: nan_median([_ratio(b[metric], p[metric]) for b, p in pairs])
                for key, metric in (
                    ("throughput", "throughput_rps"),
                    ("p99", "p99_ms"),
                    ("cpu_per_inference", "server_cpu_us_per_inference"),
                )
            }
    return out


def _num(value: float, digits: int = 0) -> str:
    return "–" if value != value else f"{value:,.{digits}f}"


def _times(value: float) -> str:
    return "–" if value != value else f"{value:.2f}×"


def markdown(report: dict[str, Any]) -> list[str]:
    """``peers.md``: for each model, a table of every server at every level, then driftserve / peer."""
    lines = [
        "### driftserve and its peers: one model, one client, side by side",
        "",
        f"`{report['command']}` — Triton's perf_analyzer (gRPC, unary, closed loop), {report['rounds']} "
        f"interleaved round(s) of {report['window_ms'] / 1000:g} s windows (order reversed every other round), "
        f"medians; {report['machine']}; {report['date']}. The machine was shared with other work while this "
        "ran: read the ratios within a row, not the absolute numbers. Every server serves the same ONNX file "
        "with one ONNX Runtime session (1 intra-op thread) and batches up to 64 rows; the peers queue at most "
        "500 µs (Triton: `dynamic_batching`; PyTriton: `DynamicBatcher`; MLServer: adaptive batching, "
        "`max_batch_time` 0.0005), driftserve runs its example config unchanged and, as the untuned "
        "variant, with only `slo_p99_ms: 20` in its batching section (listed below). "
        "MLServer otherwise runs with its defaults (inference in one worker process, its metrics "
        "interceptor on); it lacks the ModelConfig RPC that perf_analyzer calls once before the load, so "
        "`benchmarks/peers/mlserver_launch.py` adds that one method with a fixed reply, outside the "
        "request path. Server CPU is the CPU time of the server's "
        "whole process tree (Triton's Python stub, PyTriton's tritonserver and proxy, MLServer's inference "
        "worker) over perf_analyzer's measured windows, per request served in them. Peers run from their own "
        "virtual environments (`benchmarks/peers/install.sh`).",
        "",
    ]
    for model, r in report["models"].items():
        lines += [f"#### {model}", ""]
        for label, what in r["servers"].items():
            lines.append(f"- {LABELS.get(label, label)}: {what}")
        for label, reason in r["skipped"].items():
            lines.append(f"- {LABELS.get(label, label)}: **skipped** — {reason}")
        lines.append("")
        rows = []
        for clients in map(str, report["concurrency"]):
            for label, by_clients in r["median"].items():
                m = by_clients.get(clients)
                if m is None:
                    continue
                rows.append(
                    (
                        clients,
                        LABELS.get(label, label),
                        _num(m["throughput_rps"]),
                        _num(m["p50_ms"], 2),
                        _num(m["p99_ms"], 2),
                        _num(m.get("server_cpu_us_per_inference", float("nan"))),
                    )
                )
        lines += markdown_table(
            ("clients", "server", "throughput (req/s)", "p50 (ms)", "p99 (ms)", "server CPU per inference (µs)"),
            rows,
            "rlrrrr",
        )
        for key, base in (("versus", "driftserve"), ("versus_slo", "driftserve-slo")):
            lines += _versus_table(LABELS[base], r.get(key) or {}, report["concurrency"])
        lines.append("")
    return lines


def _versus_table(base: str, versus: dict[str, Any], concurrency: list[int]) -> list[str]:
    """``base`` / each peer, per client count."""
    if not versus:
        return []
    rows = []
    for peer, by_clients in versus.items():
        for clients in map(str, concurrency):
            v = by_clients.get(clients)
            if v is not None:
                rows.append(
                    (
                        LABELS.get(peer, peer),
                        clients,
                        _times(v["throughput"]),
                        _times(v["p99"]),
                        _times(v["cpu_per_inference"]),
                    )
                )
    return [
        "",
        f"{base} / peer, median of the per-round ratios (throughput: above 1 is driftserve faster; "
        "p99 and CPU per inference: below 1 is driftserve better):",
        "",
        *markdown_table(("peer", "clients", "throughput", "p99", "CPU per inference"), rows, "lrrrr"),
    ]
