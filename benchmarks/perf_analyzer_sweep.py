"""Triton's own client against driftserve: perf_analyzer, concurrency 1..8 and 32, both models.

Shows that an unchanged Triton tool runs against driftserve with zero errors, and gives the
server's throughput and p50/p99 at concurrency 1 and 32 with a C++ client that costs little CPU.
Then driftserve, the naive baseline and the transport ceiling (``benchmarks.grpc_ceiling``: bare
grpc.aio, canned replies, no model) side by side at 1 and 32 clients: several rounds, the order
reversed every other round, medians and the median of the per-round ratios. The MLP is measured
twice on the driftserve side: with the example's latency-first config (a 500 µs delay, which keeps
open-loop latency low) and with a throughput config (``THROUGHPUT_BATCHING``, the setting
``benchmarks.batching_bench`` finds best at 32 clients on two cores), as an operator would tune it.
Writes ``benchmarks/results/perf_analyzer.{json,md}``.

    python -m benchmarks.perf_analyzer_sweep --model-repository examples/repository
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml

from benchmarks.common import markdown_table, start_driftserve, start_grpc_ceiling, start_naive
from benchmarks.perf_analyzer_runner import median_run, round_order, run_perf_analyzer, throughput_ratios
from driftserve.core.machine import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ("breast_cancer_lr", "breast_cancer_mlp")
LEVELS = (1, 2, 4, 8, 32)
VERSUS_LEVELS = (1, 32)
CEILING = "grpc_ceiling"
THROUGHPUT = "driftserve_throughput_config"
THROUGHPUT_MODEL = "breast_cancer_mlp"
# A long delay: the adaptive rule closes each batch once every client in flight is queued, so
# closed-loop clients get whole batches at any concurrency; only open-loop latency pays the delay.
THROUGHPUT_BATCHING = {"enabled": True, "max_queue_delay_us": 8000, "max_queue_size": 1024}


def throughput_repository(source: Path, dest: Path) -> Path:
    """A repository holding only the MLP, with ``THROUGHPUT_BATCHING`` instead of its own batching."""
    shutil.copytree(source / THROUGHPUT_MODEL, dest / THROUGHPUT_MODEL)
    config_path = dest / THROUGHPUT_MODEL / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["batching"] = dict(THROUGHPUT_BATCHING)
    config.pop("drift", None)  # no sidecar here; keep the copy free of paths into the source
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return dest


def _versus_row(
    label: str, level: int, d: dict[str, float], n: dict[str, float], c: dict[str, float], ratio: float
) -> tuple[object, ...]:
    """One row of the side-by-side table: a driftserve config, the naive server and the ceiling."""
    return (
        label,
        level,
        f"{d['throughput_rps']:.0f}",
        f"{n['throughput_rps']:.0f}",
        f"{ratio:.2f}×",
        f"{c['throughput_rps']:.0f}",
        f"{d['p50_ms']:.2f} / {d['p99_ms']:.2f}",
        f"{n['p50_ms']:.2f} / {n['p99_ms']:.2f}",
        f"{c['p50_ms']:.2f} / {c['p99_ms']:.2f}",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "examples" / "repository")
    parser.add_argument("--window-ms", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--versus-rounds", type=int, default=3, help="rounds of the side-by-side comparison")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[int, dict[str, float]]] = {}
    runs: dict[str, dict[str, dict[int, list[dict[str, float]]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        server = start_driftserve(args.model_repository, Path(tmp))
        naive = start_naive(args.model_repository, Path(tmp))
        ceiling = start_grpc_ceiling(args.model_repository, Path(tmp))
        tuned = start_driftserve(
            throughput_repository(args.model_repository, Path(tmp) / "throughput"), Path(tmp), label=THROUGHPUT
        )
        try:
            for process in (server, naive, ceiling, tuned):
                process.wait_ready()
            for model in MODELS:
                for level in LEVELS:
                    results.setdefault(model, {})[level] = run_perf_analyzer(
                        server.target, model, level, args.window_ms
                    )
            # The naive and ceiling servers declare no batch dimension, so perf_analyzer needs the
            # shape; all three then receive the same [1, 30] requests from the same client.
            shape = ["--shape", "input:1,30"]
            contenders = [
                ("driftserve", server.target, None),
                ("naive", naive.target, shape),
                (CEILING, ceiling.target, shape),
            ]
            for round_index in range(args.versus_rounds):
                for model in MODELS:
                    for level in VERSUS_LEVELS:
                        here = contenders + ([(THROUGHPUT, tuned.target, None)] if model == THROUGHPUT_MODEL else [])
                        for label, target, extra in round_order(here, round_index):
                            runs.setdefault(model, {}).setdefault(label, {}).setdefault(level, []).append(
                                run_perf_analyzer(target, model, level, args.window_ms, extra_args=extra)
                            )
        finally:
            server.stop()
            naive.stop()
            ceiling.stop()
            tuned.stop()
    versus = {
        model: {
            label: {level: median_run(rs) for level, rs in by_level.items()} for label, by_level in by_label.items()
        }
        for model, by_label in runs.items()
    }
    # driftserve / naive within each round (same machine state), then the median over rounds.
    ratio_rounds = {
        model: {
            level: throughput_ratios(by_label["driftserve"][level], by_label["naive"][level]) for level in VERSUS_LEVELS
        }
        for model, by_label in runs.items()
    }
    throughput_rounds = {
        level: throughput_ratios(runs[THROUGHPUT_MODEL][THROUGHPUT][level], runs[THROUGHPUT_MODEL]["naive"][level])
        for level in VERSUS_LEVELS
    }
    info = machine()
    command = "python -m benchmarks.perf_analyzer_sweep " + " ".join(argv if argv is not None else sys.argv[1:])

    def versus_rows() -> Iterator[tuple[object, ...]]:
        for model, by_label in versus.items():
            for level in VERSUS_LEVELS:
                n, c = by_label["naive"][level], by_label[CEILING][level]
                ratio = statistics.median(ratio_rounds[model][level])
                yield _versus_row(model, level, by_label["driftserve"][level], n, c, ratio)
                if THROUGHPUT in by_label:
                    ratio = statistics.median(throughput_rounds[level])
                    yield _versus_row(f"{model}, throughput config", level, by_label[THROUGHPUT][level], n, c, ratio)

    batching_text = ", ".join(f"{k}: {v}" for k, v in THROUGHPUT_BATCHING.items() if k != "enabled")
    lines = [
        "### perf_analyzer (Triton's C++ client) against driftserve",
        "",
        f"`{command}` — `perf_analyzer -i grpc --concurrency-range N`, {args.window_ms / 1000:g} s windows; "
        f"{info['nproc']} cores, {info['cpu']}; {info['date_utc']} UTC. Every run completed with zero errors "
        "(perf_analyzer exits non-zero on any failed request).",
        "",
        *markdown_table(
            ("model", "concurrency", "throughput (req/s)", "p50 (ms)", "p99 (ms)"),
            (
                (model, level, f"{r['throughput_rps']:.0f}", f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}")
                for model, by_level in results.items()
                for level, r in by_level.items()
            ),
        ),
        "",
        f"Side by side with the naive baseline (one ONNX Runtime call per request, sync gRPC server) and "
        f"the transport ceiling (driftserve's gRPC front end on uvloop, canned reply, no model), same client, "
        f"{args.versus_rounds} rounds with the order reversed every other round, medians; ratio = median of "
        f"the per-round driftserve / naive ratios:",
        "",
        *markdown_table(
            (
                "model",
                "concurrency",
                "driftserve req/s",
                "naive req/s",
                "ratio",
                "ceiling req/s",
                "driftserve p50 / p99 (ms)",
                "naive p50 / p99 (ms)",
                "ceiling p50 / p99 (ms)",
            ),
            versus_rows(),
        ),
        "",
        f"Throughput config: `batching: {{{batching_text}}}` in the MLP's `config.yaml` "
        "(the example ships `max_queue_delay_us: 500, preferred_batch_sizes: [32, 64]`).",
        "",
    ]
    (args.out / "perf_analyzer.json").write_text(
        json.dumps(
            {
                "command": command,
                "machine": info,
                "results": results,
                "versus_naive": versus,
                "versus_runs": runs,
                "versus_ratio_rounds": ratio_rounds,
                "versus_ratio_median": {
                    m: {lv: statistics.median(r) for lv, r in by.items()} for m, by in ratio_rounds.items()
                },
                "throughput_config": {
                    "model": THROUGHPUT_MODEL,
                    "batching": THROUGHPUT_BATCHING,
                    "ratio_rounds": throughput_rounds,
                    "ratio_median": {lv: statistics.median(r) for lv, r in throughput_rounds.items()},
                },
            },
            indent=2,
        )
    )
    (args.out / "perf_analyzer.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
