"""Micro-batching benchmark: the large MLP at N concurrent clients, batching on vs off.

One server process serves copies of ``breast_cancer_mlp`` that differ only in their batching
config (off, and on with several ``max_queue_delay_us``), so every variant is measured by the same
process, interleaved round by round, with perf_analyzer (C++, so the client is not the
bottleneck). Reports throughput, p50/p99, the average batch size (from ModelStatistics), and the
best delay. Writes ``benchmarks/results/batching.{json,md}``.

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

from benchmarks.loadgen.launch import start_driftserve
from benchmarks.loadgen.report import machine
from benchmarks.perf_analyzer_runner import batch_counts, run_perf_analyzer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DELAYS_US = (0, 250, 1000, 4000)


def machine_text() -> str:
    info = machine()
    return f"{info['nproc']} cores, {info['cpu']}"


def make_repository(source: Path, dest: Path, max_batch: int) -> list[str]:
    variants = {"mlp_nobatch": "batching: {enabled: false}"}
    variants.update({f"mlp_delay{d}": f"batching: {{enabled: true, max_queue_delay_us: {d}}}" for d in DELAYS_US})
    for name, batching in variants.items():
        shutil.copytree(source / "breast_cancer_mlp" / "1", dest / name / "1")
        (dest / name / "config.yaml").write_text(
            f"max_batch_size: {max_batch}\ninstances: 1\nruntime: {{intra_op_threads: 1, inter_op_threads: 1}}\n{batching}\n")
    return list(variants)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "examples" / "repository")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window-ms", type=int, default=4000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        models = make_repository(args.model_repository, Path(tmp), 64)
        server = start_driftserve(Path(tmp), Path(tmp))
        server.wait_ready()
        try:
            runs: dict[str, list[dict[str, float]]] = {m: [] for m in models}
            for round_index in range(args.rounds):
                for model in models:  # interleaved: every variant once per round
                    before = batch_counts(server.target, model)
                    result = run_perf_analyzer(server.target, model, args.concurrency, args.window_ms)
                    after = batch_counts(server.target, model)
                    result["avg_batch_rows"] = (after[0] - before[0]) / max(after[1] - before[1], 1)
                    runs[model].append(result)
                    print(f"round {round_index + 1} {model}: {result['throughput_rps']:.0f} rps, "
                          f"p99 {result['p99_ms']:.2f} ms, batch {result['avg_batch_rows']:.1f}", flush=True)
        finally:
            server.stop()
    summary = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in runs.items()}
    best = max((m for m in models if m != "mlp_nobatch"), key=lambda m: summary[m]["throughput_rps"])
    report = {
        "date": dt.date.today().isoformat(), "machine": machine_text(), "concurrency": args.concurrency,
        "rounds": args.rounds, "window_ms": args.window_ms, "runs": runs, "median": summary, "best": best,
        "speedup_best_vs_off": summary[best]["throughput_rps"] / summary["mlp_nobatch"]["throughput_rps"],
        "command": "python -m benchmarks.batching_bench " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    (args.out / "batching.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"### Micro-batching: breast_cancer_mlp (30→1024→1024→2) at {args.concurrency} concurrent clients",
        "",
        f"`{report['command']}` — perf_analyzer (gRPC, sync), {args.rounds} interleaved rounds of "
        f"{args.window_ms / 1000:g} s windows, medians; {report['machine']}; {report['date']}.",
        "",
        "| variant | throughput (req/s) | p50 (ms) | p99 (ms) | avg batch (rows) | server queue (µs) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m in models:
        s = summary[m]
        label = "batching off" if m == "mlp_nobatch" else f"batching, max_queue_delay_us={m.removeprefix('mlp_delay')}"
        lines.append(f"| {label} | {s['throughput_rps']:.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | "
                     f"{s['avg_batch_rows']:.1f} | {s['server_queue_us']:.0f} |")
    lines += ["", f"Best delay: `{best.removeprefix('mlp_delay')}` µs — "
              f"{report['speedup_best_vs_off']:.2f}× the throughput of batching off.", ""]
    (args.out / "batching.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
