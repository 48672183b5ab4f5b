"""Micro-batching benchmark: the large MLP at N concurrent clients, batching on vs off.

One server process serves copies of ``breast_cancer_mlp`` that differ only in their batching
config (off, and on with several ``max_queue_delay_us``), so every variant is measured by the same
process, interleaved round by round, with perf_analyzer (C++, so the client is not the
bottleneck). Reports throughput, p50/p99, the average batch size (from ModelStatistics), and the
best delay. The transport ceiling (``benchmarks.grpc_ceiling``: driftserve's gRPC front end, canned replies, no
model) is measured in the same rounds, so the report shows what gRPC alone allows on the machine,
and so is its ``--yield-once`` variant (one await per request: the floor of any batching server).
The order of the variants is reversed every other round, so a drifting machine favours none.
Writes ``benchmarks/results/batching.{json,md}``.

    python -m benchmarks.batching_bench --model-repository examples/repository [--rounds 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.common import markdown_table, start_driftserve, start_grpc_ceiling
from benchmarks.perf_analyzer_runner import batch_counts, median_run, round_order, run_perf_analyzer, throughput_ratios
from driftserve.core.machine import machine_text

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DELAYS_US = (0, 250, 1000, 4000, 8000)
# A preferred size closes a batch as soon as that many rows wait. The adaptive delay closes it
# once every recently in-flight request is queued, which for 32 closed-loop clients is the same
# 32; measuring both shows whether the adaptive rule alone finds the whole batch.
PREFERRED = {"mlp_delay8000_pref32": (8000, [32])}
CEILING = "grpc_ceiling"
CEILING_YIELD = "grpc_ceiling_yield"
CEILINGS = (CEILING, CEILING_YIELD)


def make_repository(source: Path, dest: Path, max_batch: int) -> list[str]:
    variants = {"mlp_nobatch": "batching: {enabled: false}"}
    variants.update({f"mlp_delay{d}": f"batching: {{enabled: true, max_queue_delay_us: {d}}}" for d in DELAYS_US})
    variants.update(
        {
            name: f"batching: {{enabled: true, max_queue_delay_us: {delay}, preferred_batch_sizes: {sizes}}}"
            for name, (delay, sizes) in PREFERRED.items()
        }
    )
    for name, batching in variants.items():
        shutil.copytree(source / "breast_cancer_mlp" / "1", dest / name / "1")
        (dest / name / "config.yaml").write_text(
            f"max_batch_size: {max_batch}\ninstances: 1\n"
            f"runtime: {{intra_op_threads: 1, inter_op_threads: 1}}\n{batching}\n"
        )
    return list(variants)


def batching_label(variant: str) -> str:
    """``max_queue_delay_us=…[, preferred_batch_sizes=[…]]`` of a batching variant."""
    if variant in PREFERRED:
        delay, sizes = PREFERRED[variant]
        return f"max_queue_delay_us={delay}, preferred_batch_sizes={sizes}"
    return f"max_queue_delay_us={variant.removeprefix('mlp_delay')}"


def variant_row(variant: str, s: dict[str, float]) -> tuple[str, ...]:
    """One row of the report's table: a batching variant or a transport ceiling, with its medians."""
    if variant in CEILINGS:
        label = (
            "transport ceiling: driftserve's gRPC front end, canned reply, no model"
            if variant == CEILING
            else "transport ceiling with one `await asyncio.sleep(0)` per request"
        )
        batch, queue = "–", "–"
    else:
        label = "batching off" if variant == "mlp_nobatch" else f"batching, {batching_label(variant)}"
        batch, queue = f"{s['avg_batch_rows']:.1f}", f"{s['server_queue_us']:.0f}"
    return label, f"{s['throughput_rps']:.0f}", f"{s['p50_ms']:.2f}", f"{s['p99_ms']:.2f}", batch, queue


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "examples" / "repository")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--window-ms", type=int, default=4000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        models = make_repository(args.model_repository, Path(tmp), 64)
        logs = Path(tmp) / "logs"
        logs.mkdir()
        server = start_driftserve(Path(tmp), logs)
        ceilings = {
            CEILING: start_grpc_ceiling(Path(tmp), logs),
            CEILING_YIELD: start_grpc_ceiling(Path(tmp), logs, yield_once=True),
        }
        try:
            for process in (server, *ceilings.values()):
                process.wait_ready()
            runs: dict[str, list[dict[str, float]]] = {m: [] for m in (*models, *CEILINGS)}
            for round_index in range(args.rounds):
                for model in round_order([*models, *CEILINGS], round_index):
                    if model in ceilings:
                        # Its metadata declares no batch dimension (like the naive server): give the shape.
                        result = run_perf_analyzer(
                            ceilings[model].target,
                            "mlp_nobatch",
                            args.concurrency,
                            args.window_ms,
                            extra_args=["--shape", "input:1,30"],
                        )
                        result["avg_batch_rows"] = float("nan")
                    else:
                        before = batch_counts(server.target, model)
                        result = run_perf_analyzer(server.target, model, args.concurrency, args.window_ms)
                        after = batch_counts(server.target, model)
                        result["avg_batch_rows"] = (after[0] - before[0]) / max(after[1] - before[1], 1)
                    runs[model].append(result)
                    print(
                        f"round {round_index + 1} {model}: {result['throughput_rps']:.0f} rps, "
                        f"p99 {result['p99_ms']:.2f} ms, batch {result['avg_batch_rows']:.1f}",
                        flush=True,
                    )
        finally:
            server.stop()
            for process in ceilings.values():
                process.stop()
    summary = {m: median_run(rs) for m, rs in runs.items()}
    best = max((m for m in models if m != "mlp_nobatch"), key=lambda m: summary[m]["throughput_rps"])
    # Ratios within each round (both variants saw the same machine state), then their median.
    round_ratios = throughput_ratios(runs[best], runs["mlp_nobatch"])
    report = {
        "date": dt.date.today().isoformat(),
        "machine": machine_text(),
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "window_ms": args.window_ms,
        "runs": runs,
        "median": summary,
        "best": best,
        "best_configuration": batching_label(best),
        "speedup_best_vs_off": summary[best]["throughput_rps"] / summary["mlp_nobatch"]["throughput_rps"],
        "speedup_best_vs_off_per_round": round_ratios,
        "speedup_best_vs_off_median_of_rounds": statistics.median(round_ratios),
        "best_vs_ceiling": summary[best]["throughput_rps"] / summary[CEILING]["throughput_rps"],
        "best_vs_ceiling_yield": summary[best]["throughput_rps"] / summary[CEILING_YIELD]["throughput_rps"],
        "command": "python -m benchmarks.batching_bench " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    (args.out / "batching.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"### Micro-batching: breast_cancer_mlp (30→1024→1024→2) at {args.concurrency} concurrent clients",
        "",
        f"`{report['command']}` — perf_analyzer (gRPC, sync), {args.rounds} interleaved rounds of "
        f"{args.window_ms / 1000:g} s windows, medians; {report['machine']}; {report['date']}.",
        "",
        *markdown_table(
            ("variant", "throughput (req/s)", "p50 (ms)", "p99 (ms)", "avg batch (rows)", "server queue (µs)"),
            (variant_row(m, summary[m]) for m in (*models, *CEILINGS)),
        ),
        "",
        f"Best configuration: `{batching_label(best)}` — "
        f"{report['speedup_best_vs_off']:.2f}× the throughput of batching off (ratio of medians; median of "
        f"the per-round ratios {report['speedup_best_vs_off_median_of_rounds']:.2f}×, rounds: "
        f"{', '.join(f'{r:.2f}' for r in round_ratios)}). driftserve reaches "
        f"{100 * report['best_vs_ceiling']:.0f}% of the transport ceiling and "
        f"{100 * report['best_vs_ceiling_yield']:.0f}% of the one-await ceiling.",
        "",
    ]
    (args.out / "batching.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
