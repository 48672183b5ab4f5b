"""Triton's own client against driftserve: perf_analyzer, concurrency 1..8 and 32, both models.

Shows that an unchanged Triton tool runs against driftserve with zero errors, and gives the
server's throughput and p50/p99 at concurrency 1 and 32 with a C++ client that costs little CPU.
Writes ``benchmarks/results/perf_analyzer.{json,md}``.

    python -m benchmarks.perf_analyzer_sweep --model-repository examples/repository
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from benchmarks.loadgen.launch import start_driftserve, start_naive
from benchmarks.loadgen.report import machine
from benchmarks.perf_analyzer_runner import run_perf_analyzer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ("breast_cancer_lr", "breast_cancer_mlp")
LEVELS = (1, 2, 4, 8, 32)
VERSUS_LEVELS = (1, 32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "examples" / "repository")
    parser.add_argument("--window-ms", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    results: dict[str, dict[int, dict[str, float]]] = {}
    versus: dict[str, dict[str, dict[int, dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        server = start_driftserve(args.model_repository, Path(tmp))
        naive = start_naive(args.model_repository, Path(tmp))
        try:
            server.wait_ready()
            naive.wait_ready()
            for model in MODELS:
                for level in LEVELS:
                    results.setdefault(model, {})[level] = run_perf_analyzer(server.target, model, level, args.window_ms)
            for model in MODELS:  # driftserve and the naive baseline back to back, same client
                for level in VERSUS_LEVELS:
                    # The naive server declares no batch dimension, so perf_analyzer needs the shape;
                    # both servers then receive the same [1, 30] requests.
                    for label, target, extra in (("driftserve", server.target, None),
                                                 ("naive", naive.target, ["--shape", "input:1,30"])):
                        versus.setdefault(model, {}).setdefault(label, {})[level] = run_perf_analyzer(
                            target, model, level, args.window_ms, extra_args=extra)
        finally:
            server.stop()
            naive.stop()
    info = machine()
    command = "python -m benchmarks.perf_analyzer_sweep " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "### perf_analyzer (Triton's C++ client) against driftserve",
        "",
        f"`{command}` — `perf_analyzer -i grpc --concurrency-range N`, {args.window_ms / 1000:g} s windows; "
        f"{info['nproc']} cores, {info['cpu']}; {info['date_utc']} UTC. Every run completed with zero errors "
        "(perf_analyzer exits non-zero on any failed request).",
        "",
        "| model | concurrency | throughput (req/s) | p50 (ms) | p99 (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for model, by_level in results.items():
        for level, r in by_level.items():
            lines.append(f"| {model} | {level} | {r['throughput_rps']:.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} |")
    lines += [
        "",
        "Side by side with the naive baseline (one ONNX Runtime call per request, sync gRPC server), "
        "same client, back to back:",
        "",
        "| model | concurrency | driftserve req/s | naive req/s | ratio | driftserve p50 / p99 (ms) | naive p50 / p99 (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model, by_label in versus.items():
        for level in VERSUS_LEVELS:
            d, n = by_label["driftserve"][level], by_label["naive"][level]
            lines.append(f"| {model} | {level} | {d['throughput_rps']:.0f} | {n['throughput_rps']:.0f} | "
                         f"{d['throughput_rps'] / n['throughput_rps']:.2f}× | {d['p50_ms']:.2f} / {d['p99_ms']:.2f} | "
                         f"{n['p50_ms']:.2f} / {n['p99_ms']:.2f} |")
    lines.append("")
    (args.out / "perf_analyzer.json").write_text(json.dumps(
        {"command": command, "machine": info, "results": results, "versus_naive": versus}, indent=2))
    (args.out / "perf_analyzer.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
