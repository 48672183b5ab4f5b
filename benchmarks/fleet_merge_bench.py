"""Fleet aggregation at scale, by simulation: merge cost vs replicas, features and bins; alert speed-up.

Part 1, ``merge``: replica states are made the way a sidecar makes them (a ``ModelDriftMonitor``
fed random rows, its counts encoded by ``window_state.encode_model``), serialised, then held as R
distinct byte strings, as the aggregator holds R replicas' last states. One round is what the
aggregator does per pull and per evaluation: parse and check every replica's message
(``decode_model``) and sum them (``merge_group``). Timed per round (median of rounds); memory is
the bytes held for the replicas plus the peak ``tracemalloc`` sees during the round.

Part 2, ``alert_rows``: a hidden shift of one feature reaching every one of N = 4 replicas; rows
per replica until the fleet (merged counts, the aggregator's code path minus gRPC) first alerts,
against rows until one replica alone first alerts. Median over seeds, for the default
``min_window_rows`` (500) and for 50, which separates the minimum-window gate from the statistics.

``python -m benchmarks.fleet_merge_bench --out benchmarks/results/fleet.json`` (writes ``fleet.md`` too).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_breast_cancer

from benchmarks.common import markdown_table
from driftserve.api import driftserve_pb2
from driftserve.core.drift_config import DriftConfig
from driftserve.core.machine import machine
from driftserve.sidecar.drift.detector import ModelDriftMonitor
from driftserve.sidecar.drift.profile import build_profile
from driftserve.sidecar.fleet.merge import merge_group, window_panes
from driftserve.sidecar.window_state import GroupLayout, decode_model, encode_model, layout_digest

PANES = 6
ROWS_PER_PANE = 500
TEMPLATES = 8
PANE_SECONDS = 60.0
STEP_ROWS = 10
SHIFT_SD = 0.15


def _monitor(features: int, bins: int, min_window_rows: int = 500, seed: int = 0) -> ModelDriftMonitor:
    rng = np.random.default_rng(seed)
    names = [f"f{i}" for i in range(features)]
    profile = build_profile(rng.normal(size=(max(20 * bins, 2000), features)), names, bins=bins)
    config = DriftConfig(
        reference="profile.json",
        window={"pane_seconds": PANE_SECONDS, "panes": PANES},
        min_window_rows=min_window_rows,
    )
    return ModelDriftMonitor(profile, config, "sim")


def _layouts(monitor: ModelDriftMonitor) -> list[GroupLayout]:
    return [GroupLayout(g.source, *g.cumulative.counts.shape, layout_digest(g.ring)) for g in monitor.group_states()]


def _templates(monitor: ModelDriftMonitor, features: int, now: float) -> list[bytes]:
    """Serialised states of TEMPLATES replicas, each with PANES panes of ROWS_PER_PANE rows."""
    out = []
    for t in range(TEMPLATES):
        monitor.reset()
        rng = np.random.default_rng(100 + t)
        for p in range(PANES):
            monitor.update(rng.normal(size=(ROWS_PER_PANE, features)), None, now - (PANES - 1 - p) * PANE_SECONDS)
        out.append(encode_model("sim", monitor, None, PANES).SerializeToString())
    return out


def _round(held: list[bytes], layouts: list[GroupLayout], now: float) -> tuple[float, float, float]:
    """One aggregation round, timed in CPU seconds (the machine is shared): (decode, merge, wall)."""
    gc.collect()
    wall, started = time.perf_counter(), time.process_time()
    decoded = [decode_model(driftserve_pb2.ModelWindowState.FromString(b), layouts) for b in held]
    parsed = time.process_time()
    first, last = window_panes(now, PANE_SECONDS, PANES)
    sliding, cumulative = merge_group([d.groups[0] for d in decoded], layouts[0], first, last)
    merged = time.process_time()
    assert cumulative.rows == len(held) * PANES * ROWS_PER_PANE and sliding.rows == cumulative.rows
    return parsed - started, merged - parsed, time.perf_counter() - wall


def _memory(held: list[bytes], layouts: list[GroupLayout], now: float) -> tuple[int, int]:
    """(bytes the decoded replica states hold, extra peak bytes while merging them), by tracemalloc."""
    gc.collect()
    tracemalloc.start()
    decoded = [decode_model(driftserve_pb2.ModelWindowState.FromString(b), layouts) for b in held]
    kept = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    first, last = window_panes(now, PANE_SECONDS, PANES)
    merge_group([d.groups[0] for d in decoded], layouts[0], first, last)
    peak = tracemalloc.get_traced_memory()[1] - kept
    tracemalloc.stop()
    return kept, peak


def merge_case(replicas: int, features: int, bins: int, rounds: int) -> dict[str, Any]:
    monitor = _monitor(features, bins)
    now = time.time()
    templates = _templates(monitor, features, now)
    # Distinct byte strings, as R replicas' messages would be.
    held = [bytes(bytearray(templates[i % TEMPLATES])) for i in range(replicas)]
    layouts = _layouts(monitor)
    results = [_round(held, layouts, now) for _ in range(rounds)]
    kept, peak = _memory(held, layouts, now)
    merged = merge_group([], layouts[0], 0, 0)[0]
    started = time.perf_counter()
    for _ in range(3):
        monitor.evaluate([(merged, merged)], now, 0)
    evaluate_s = (time.perf_counter() - started) / 3
    return {
        "replicas": replicas,
        "features": features,
        "bins": bins,
        "state_bytes_per_replica": statistics.median(len(t) for t in templates),
        "message_bytes": sum(len(b) for b in held),
        "decoded_bytes": kept,
        "merge_peak_bytes": peak,
        "decode_cpu_s": statistics.median(r[0] for r in results),
        "merge_cpu_s": statistics.median(r[1] for r in results),
        "round_cpu_s": statistics.median(r[0] + r[1] for r in results),
        "round_wall_s": statistics.median(r[2] for r in results),
        "evaluate_s": evaluate_s,
    }


def alert_rows(replicas: int, step: int, min_window_rows: int, seed: int, shift_sd: float) -> dict[str, int | None]:
    """Rows per replica until the fleet and until one replica first alert on the shifted feature."""
    data = load_breast_cancer()
    x = np.asarray(data.data, dtype=np.float64)
    names = [str(n).replace(" ", "_") for n in data.feature_names]
    column = names.index("mean_concavity")
    profile = build_profile(x, names)
    config = DriftConfig(reference="profile.json", min_window_rows=min_window_rows)
    sidecars = [ModelDriftMonitor(profile, config, "cancer") for _ in range(replicas)]
    fleet = ModelDriftMonitor(profile, config, "cancer")
    layouts = _layouts(fleet)
    rng = np.random.default_rng(seed)
    now = time.time()
    fleet_rows = single_rows = None
    per_replica = 0
    while single_rows is None and per_replica < 20_000:
        per_replica += step
        for sidecar in sidecars:
            rows = x[rng.integers(0, x.shape[0], step)].copy()
            rows[:, column] += shift_sd * x[:, column].std()
            sidecar.update(rows, None, now)
        now += 0.01
        if fleet_rows is None:
            states = [decode_model(encode_model("cancer", s, None, 0), layouts) for s in sidecars]
            first, last = window_panes(now, config.window.pane_seconds, config.window.panes)
            merged = merge_group([s.groups[0] for s in states], layouts[0], first, last)
            report = fleet.evaluate([merged], now, sum(s.rows_total for s in states))
            if report.get("mean_concavity", "sliding").status == "alert":
                fleet_rows = per_replica
        if sidecars[0].report(now).get("mean_concavity", "sliding").status == "alert":
            single_rows = per_replica
    return {"fleet": fleet_rows, "single": single_rows}


def markdown(doc: dict[str, Any]) -> str:
    def row(c: dict[str, Any]) -> tuple[object, ...]:
        return (
            c["replicas"],
            c["features"],
            c["bins"],
            f"{c['state_bytes_per_replica'] / 1024:,.0f}",
            f"{c['decoded_bytes'] / 2**20:,.1f}",
            f"{c['decode_cpu_s'] * 1e3:,.1f}",
            f"{c['merge_cpu_s'] * 1e3:,.1f}",
            f"{c['round_cpu_s'] * 1e3 / c['replicas']:,.2f}",
            f"{c['round_wall_s'] * 1e3:,.0f}",
            f"{c['merge_peak_bytes'] / 2**20:,.1f}",
            f"{c['evaluate_s'] * 1e3:,.1f}",
        )

    header = (
        "replicas",
        "features",
        "bins",
        "KiB/replica",
        "held MiB",
        "decode ms",
        "merge ms",
        "ms/replica",
        "wall ms",
        "merge peak MiB",
        "score ms",
    )
    lines = [
        "### Fleet aggregation: merge cost by simulation",
        "",
        f"`python -m benchmarks.fleet_merge_bench` — {doc['date']}; {doc['machine']}. Each replica's state: "
        f"{PANES} panes of {ROWS_PER_PANE} rows encoded by the sidecar's own code; one round = parse and check "
        f"every replica's message, then sum them; medians of {doc['rounds']} rounds, in CPU milliseconds of the "
        "one thread doing it (*wall ms*: the same round in wall time, inflated by other work on this shared "
        "machine). *held*: what the decoded replica states occupy (tracemalloc), about their message bytes; "
        "*merge peak*: extra memory while summing them; *score*: PSI/KS/hysteresis on the merged counts, which "
        "does not depend on replicas. The machine was shared with other work while this ran: read ratios.",
        "",
        "By replicas (30 features, 1,000 bins):",
        "",
        *markdown_table(header, [row(c) for c in doc["merge"] if c["group"] == "replicas"], "r" * 11),
        "",
        "By features (100 replicas, 1,000 bins) and by bins (100 replicas, 30 features):",
        "",
        *markdown_table(header, [row(c) for c in doc["merge"] if c["group"] in ("features", "bins")], "r" * 11),
        "",
    ]
    growth = doc.get("growth", {})
    if growth:
        lines += [
            "Growth of the round's CPU time per 10× more: "
            + ", ".join(f"{k} {v:.1f}×" for k, v in growth.items())
            + ". Cost is linear in replicas × non-zero bins: each replica pane is one vectorised addition.",
            "",
        ]
    a = doc.get("alert_rows")
    if a:
        lines += [
            f"### Rows per replica until a shift alerts: fleet of {a['replicas']} vs one replica",
            "",
            f"`mean_concavity` shifted by {a['shift_sd']} SD on every replica, {a['step']} rows per replica per "
            f"evaluation (one hysteresis step each), median over {len(a['seeds'])} seeds; default PSI/KS thresholds "
            "and hysteresis. A replica alone needs both `min_window_rows` and enough rows for the statistics; "
            "the fleet's window gets N rows per row of each replica.",
            "",
            *markdown_table(
                ("min_window_rows", "fleet: rows per replica", "one replica: rows", "ratio"),
                (
                    (
                        r["min_window_rows"],
                        r["fleet_median"],
                        r["single_median"],
                        f"{r['fleet_median'] / r['single_median']:.2f}",
                    )
                    for r in a["results"]
                ),
                "rrrr",
            ),
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fleet.json"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replicas", default="10,100,1000")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    cases: list[tuple[str, int, int, int]] = [("replicas", int(r), 30, 1000) for r in args.replicas.split(",")]
    cases += [("features", 100, f, 1000) for f in (10, 100)]
    cases += [("bins", 100, 30, b) for b in (100, 10_000)]
    merge = []
    for group, r, f, b in cases:
        result = {"group": group, **merge_case(r, f, b, args.rounds)}
        print(json.dumps(result), flush=True)
        merge.append(result)

    def round_s(r: int, f: int, b: int) -> float | None:
        found = [c["round_cpu_s"] for c in merge if (c["replicas"], c["features"], c["bins"]) == (r, f, b)]
        return found[0] if found else None

    growth = {}
    pairs = {
        "replicas 100→1000": ((1000, 30, 1000), (100, 30, 1000)),
        "features 10→100": ((100, 100, 1000), (100, 10, 1000)),
        "bins (per 10×, measured 100→10,000)": ((100, 30, 10_000), (100, 30, 100)),
    }
    for name, (big, small) in pairs.items():
        hi, lo = round_s(*big), round_s(*small)
        if hi and lo:
            growth[name] = (hi / lo) ** (0.5 if "bins" in name else 1.0)
    results = []
    seeds = list(range(args.seeds))
    for min_rows in (500, 50):
        runs = [alert_rows(4, STEP_ROWS, min_rows, seed, SHIFT_SD) for seed in seeds]
        fleet = [r["fleet"] for r in runs if r["fleet"] is not None]
        single = [r["single"] for r in runs if r["single"] is not None]
        results.append(
            {
                "min_window_rows": min_rows,
                "runs": runs,
                "fleet_median": statistics.median(fleet),
                "single_median": statistics.median(single),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    doc = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{machine()['nproc']} cores, {machine()['cpu']}",
        "rounds": args.rounds,
        "merge": merge,
        "growth": growth,
        "alert_rows": {"replicas": 4, "step": STEP_ROWS, "shift_sd": SHIFT_SD, "seeds": seeds, "results": results},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    args.out.with_suffix(".md").write_text(markdown(doc))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
