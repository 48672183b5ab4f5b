"""Multi-process serving: throughput of ``driftserve serve --workers N`` for several N.

Each N gets its own server (N worker processes on one SO_REUSEPORT port); perf_analyzer drives it
at a fixed concurrency, rounds interleaved across N. perf_analyzer opens one connection per
concurrent context, so the kernel spreads them over the workers. Writes
``benchmarks/results/workers.{json,md}`` (``--tag`` changes the file name).

    python -m benchmarks.workers_bench --model-repository examples/repository --workers 1,2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from benchmarks.common import markdown_table, start_driftserve
from benchmarks.perf_analyzer_runner import median_run, run_perf_analyzer
from driftserve.core.machine import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "examples" / "repository")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--models", default="breast_cancer_lr,breast_cancer_mlp")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window-ms", type=int, default=4000)
    parser.add_argument("--tag", default="workers")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    counts = [int(w) for w in args.workers.split(",")]
    models = args.models.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        servers = {}
        try:
            for n in counts:
                servers[n] = start_driftserve(
                    args.model_repository, Path(tmp), ["--workers", str(n)], label=f"workers{n}"
                )
            for server in servers.values():
                server.wait_ready(timeout_s=300)
            for round_index in range(args.rounds):
                for model in models:
                    for n, server in servers.items():
                        result = run_perf_analyzer(server.target, model, args.concurrency, args.window_ms)
                        runs.setdefault(f"{model}|{n}", []).append(result)
                        print(
                            f"round {round_index + 1} {model} workers={n}: {result['throughput_rps']:.0f} rps, "
                            f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms",
                            flush=True,
                        )
        finally:
            for server in servers.values():
                server.stop()
    median = {key: median_run(rs) for key, rs in runs.items()}
    info = machine()
    command = "python -m benchmarks.workers_bench " + " ".join(argv if argv is not None else sys.argv[1:])

    def rows() -> Iterator[tuple[object, ...]]:
        for model in models:
            base = median[f"{model}|{counts[0]}"]["throughput_rps"]
            for n in counts:
                m = median[f"{model}|{n}"]
                yield (
                    model,
                    n,
                    f"{m['throughput_rps']:.0f}",
                    f"{m['throughput_rps'] / base:.2f}×",
                    f"{m['p50_ms']:.2f}",
                    f"{m['p99_ms']:.2f}",
                )

    lines = [
        f"### Worker processes ({info['nproc']} cores): `--workers N` at {args.concurrency} concurrent clients",
        "",
        f"`{command}` — perf_analyzer, {args.rounds} interleaved rounds of {args.window_ms / 1000:g} s, medians; "
        f"{info['cpu']}; {info['date_utc']} UTC. The client runs on the same cores.",
        "",
        *markdown_table(
            ("model", "workers", "throughput (req/s)", "vs 1 worker", "p50 (ms)", "p99 (ms)"),
            rows(),
        ),
        "",
    ]
    (args.out / f"{args.tag}.json").write_text(
        json.dumps({"command": command, "machine": info, "runs": runs, "median": median}, indent=2)
    )
    (args.out / f"{args.tag}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
