"""Multi-process serving: throughput of ``driftserve serve --workers N`` for several N.

Each N gets its own server (N worker processes on one SO_REUSEPORT port); perf_analyzer drives it
at a fixed concurrency, rounds interleaved across N. perf_analyzer opens one connection per
concurrent context, so the kernel spreads them over the workers. ``--ceiling`` measures, in the
same rounds, N transport-ceiling processes (``benchmarks.grpc_ceiling``: the bare gRPC front end
with canned replies) sharing one port the same way: what N processes of that front end can answer
on the machine, the bound for ``--workers N``. ``--slo-ms`` serves copies of the models whose
batching section is only ``slo_p99_ms`` (the SLO config) instead of the repository's own.
``--pin-workers`` serves with ``--pin-workers`` and confines the N ceiling processes to the same N
shares of the CPUs, each placing its GIL's threads as such a worker does (``--gil-cpu``), so the
ceiling stays a like-for-like bound. Writes
``benchmarks/results/workers.{json,md}`` (``--tag`` changes the file name).

    python -m benchmarks.workers_bench --model-repository examples/repository --workers 1,2
    python -m benchmarks.workers_bench --workers 1,2,4,8 --ceiling --slo-ms 20 --concurrency 128 [--pin-workers]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from benchmarks.common import ServerProcess, markdown_table, start_driftserve, start_grpc_ceiling
from benchmarks.peers.bench import shape_args
from benchmarks.perf_analyzer_runner import measure_with_cpu, median_run
from benchmarks.slo_bench import slo_repository
from driftserve.core.cpus import affinity, partition_cpus, usable_cpus
from driftserve.core.machine import machine
from driftserve.core.ports import free_port
from driftserve.server.settings import sender_pays_off

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
WORKERS, CEILING = "driftserve", "ceiling"


def start_ceiling(repository: Path, log_dir: Path, processes: int, pinned: bool = False) -> list[ServerProcess]:
    """``processes`` transport-ceiling processes sharing one port, writing replies as
    ``serve --workers processes`` would (``--reply-sender auto``); ``pinned``: each confined to its
    share of the CPUs and placing its GIL's threads as ``--pin-workers`` gives a worker."""
    port = free_port()
    sender = sender_pays_off(usable_cpus() / processes)
    shares: list[list[int] | None] = list(partition_cpus(affinity(), processes)) if pinned else [None] * processes
    return [
        start_grpc_ceiling(
            repository,
            log_dir,
            label=f"ceiling{processes}_{i}",
            shared_port=port,
            reply_sender=sender,
            cpu_set=share,
        )
        for i, share in enumerate(shares)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "examples" / "repository")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--models", default="breast_cancer_lr,breast_cancer_mlp")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window-ms", type=int, default=4000)
    parser.add_argument("--ceiling", action="store_true", help="also measure N ceiling processes per N")
    parser.add_argument("--slo-ms", type=float, default=None, help="serve the SLO config with this slo_p99_ms")
    parser.add_argument("--max-threads", type=int, default=None, help="perf_analyzer's client threads (its default: 4)")
    parser.add_argument(
        "--pin-workers", action="store_true", help="serve with --pin-workers; pin the ceiling processes alike"
    )
    parser.add_argument("--tag", default="workers")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    counts = [int(w) for w in args.workers.split(",")]
    models = args.models.split(",")
    client_args = ["--max-threads", str(args.max_threads)] if args.max_threads else []
    args.out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repository, served = args.model_repository, {m: m for m in models}
        if args.slo_ms is not None:
            repository = Path(tmp) / "repository"
            served = {m: slo_repository(args.model_repository, repository, m, args.slo_ms) for m in models}
        shape = {model: shape_args(repository, served[model]) for model in models}
        servers: dict[tuple[str, int], list[ServerProcess]] = {}
        try:
            for n in counts:
                pin = ["--pin-workers"] if args.pin_workers and n > 1 else []
                servers[WORKERS, n] = [
                    start_driftserve(repository, Path(tmp), ["--workers", str(n), *pin], label=f"workers{n}")
                ]
                if args.ceiling:
                    servers[CEILING, n] = start_ceiling(repository, Path(tmp), n, pinned=args.pin_workers and n > 1)
            for group in servers.values():
                for server in group:
                    server.wait_ready(timeout_s=300)
            for round_index in range(args.rounds):
                for model in models:
                    for (kind, n), group in servers.items():
                        extra = client_args + (shape[model] if kind == CEILING else [])
                        result = measure_with_cpu(
                            group, served[model], args.concurrency, args.window_ms, extra, lambda line: print(line)
                        )
                        runs.setdefault(f"{model}|{kind}|{n}", []).append(result)
                        print(
                            f"round {round_index + 1} {model} {kind} {n}: {result['throughput_rps']:.0f} rps, "
                            f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
                            f"{result['server_cpu_us_per_inference']:.0f} µs CPU",
                            flush=True,
                        )
        finally:
            for group in servers.values():
                for server in group:
                    server.stop()
    median = {key: median_run(rs) for key, rs in runs.items()}
    info = machine()
    command = "python -m benchmarks.workers_bench " + " ".join(argv if argv is not None else sys.argv[1:])

    def rows() -> Iterator[tuple[object, ...]]:
        for model in models:
            base = median[f"{model}|{WORKERS}|{counts[0]}"]["throughput_rps"]
            for n in counts:
                m = median[f"{model}|{WORKERS}|{n}"]
                row: tuple[object, ...] = (
                    model,
                    n,
                    f"{m['throughput_rps']:.0f}",
                    f"{m['throughput_rps'] / base:.2f}×",
                    f"{m['p50_ms']:.2f}",
                    f"{m['p99_ms']:.2f}",
                    f"{m['server_cpu_us_per_inference']:.0f}",
                )
                if args.ceiling:
                    c = median[f"{model}|{CEILING}|{n}"]
                    row += (
                        f"{c['throughput_rps']:.0f}",
                        f"{c['server_cpu_us_per_inference']:.0f}",
                        f"{m['throughput_rps'] / c['throughput_rps']:.2f}×",
                    )
                yield row

    header: tuple[str, ...] = (
        "model",
        "workers",
        "throughput (req/s)",
        "vs 1 worker",
        "p50 (ms)",
        "p99 (ms)",
        "CPU (µs/req)",
    )
    if args.ceiling:
        header += ("ceiling, N processes (req/s)", "ceiling CPU (µs/req)", "vs ceiling")
    config = (
        f"the SLO config (`batching: {{slo_p99_ms: {args.slo_ms:g}}}` only)"
        if args.slo_ms is not None
        else "the repository's own config"
    )
    pinning = (
        " Workers ran with `--pin-workers`; the ceiling's N processes were confined to the same N shares of the"
        " CPUs, each placing its GIL's threads as such a worker does (`--gil-cpu`)."
        if args.pin_workers
        else ""
    )
    ceiling_text = (
        " The ceiling is N `benchmarks.grpc_ceiling` processes (the same gRPC front end, canned replies, no"
        " model) sharing one port, measured in the same rounds."
        if args.ceiling
        else ""
    )
    lines = [
        f"### Worker processes ({info['nproc']} cores): `--workers N` at {args.concurrency} concurrent clients",
        "",
        f"`{command}` — perf_analyzer, {args.rounds} interleaved rounds of {args.window_ms / 1000:g} s, medians; "
        f"{info['cpu']}; {info['date_utc']} UTC. The client runs on the same cores; CPU is the server"
        " processes' (all workers) per request. Models served with "
        f"{config}.{ceiling_text}{pinning}",
        "",
        *markdown_table(header, rows()),
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
