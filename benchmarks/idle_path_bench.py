"""The idle path: one closed-loop client, driftserve against the naive server and the bare transport.

At one client a request should pay for nothing it does not need. For each example model this
measures, with perf_analyzer at concurrency 1 in interleaved rounds: the example config (a batch
runs on the event loop when the batcher is idle and the model's batches take under
``inline_when_idle_us``), the same config with ``inline_when_idle_us: 0`` (every batch through a
worker thread), batching off, the example config on grpcio's grpc.aio server (``--grpc-frontend aio``) instead of
driftserve's completion-queue front end, the naive inline-ORT server, and the transport ceiling
(``benchmarks.grpc_ceiling``: canned reply) on either front end. Reports p50/p99 and throughput. Writes
``benchmarks/results/idle_path.{json,md}``.

    python -m benchmarks.idle_path_bench --model-repository examples/repository [--rounds 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import ServerProcess, markdown_table, start_driftserve, start_grpc_ceiling, start_naive
from benchmarks.perf_analyzer_runner import median_run, round_order, run_perf_analyzer
from driftserve.core.machine import machine_text

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ("breast_cancer_mlp", "breast_cancer_lr")
VARIANTS = ("example", "threads", "off", "aio", "naive", "ceiling", "ceiling-aio")
# Variants served by a process of their own (the others are models of the one driftserve process).
OWN_PROCESS = ("aio", "naive", "ceiling", "ceiling-aio")
LABELS = {
    "example": "driftserve, example config",
    "threads": "driftserve, inline_when_idle_us: 0 (every batch on a worker thread)",
    "off": "driftserve, batching off",
    "aio": "driftserve, example config, on grpc.aio (--grpc-frontend aio)",
    "naive": "naive inline-ORT server",
    "ceiling": "transport ceiling (no model)",
    "ceiling-aio": "transport ceiling on grpc.aio (no model)",
}


def make_repository(source: Path, dest: Path, model: str) -> None:
    config = yaml.safe_load((source / model / "config.yaml").read_text())
    version = config.get("deployment", {}).get("served_version") or max(
        int(p.name) for p in (source / model).iterdir() if p.name.isdigit()
    )
    batching = config["batching"]
    for variant, section in (
        ("example", batching),
        ("threads", {**batching, "inline_when_idle_us": 0}),
        ("off", {"enabled": False}),
    ):
        shutil.copytree(source / model / str(version), dest / f"{model}_{variant}" / "1")
        body = {**{k: v for k, v in config.items() if k not in ("drift", "deployment", "version_policy")}}
        body["batching"] = section
        (dest / f"{model}_{variant}" / "config.yaml").write_text(yaml.safe_dump(body))


def measure(process: ServerProcess, model: str, window_ms: int, shape: bool) -> dict[str, float]:
    """One window at concurrency 1 (±300% between windows accepted: the machine is noisy)."""
    extra = ["--shape", "input:1,30"] if shape else None  # the baselines declare no batch dimension
    try:
        return run_perf_analyzer(process.target, model, 1, window_ms, 300, extra)
    except RuntimeError as exc:
        print(f"  perf_analyzer: {str(exc).strip().splitlines()[-1]}", flush=True)
        nan = float("nan")
        return {"throughput_rps": nan, "p50_ms": nan, "p99_ms": nan}


def markdown(report: dict[str, Any]) -> list[str]:
    """The report's Markdown section (medians per server, p50 ratios per round)."""
    lines = [
        "### The idle path: one client",
        "",
        f"`{report['command']}` — perf_analyzer (gRPC, sync, concurrency 1), {report['rounds']} interleaved rounds "
        f"of {report['window_ms'] / 1000:g} s windows, medians; {report['machine']}; {report['date']}. The machine "
        "was shared with other work: read ratios within a table.",
        "",
    ]
    for model, r in report["models"].items():
        lines += [f"#### {model}", ""]
        lines += markdown_table(
            ("server", "p50 (ms)", "p99 (ms)", "req/s"),
            (
                (LABELS[v], f"{m['p50_ms']:.3f}", f"{m['p99_ms']:.3f}", f"{m['throughput_rps']:.0f}")
                for v, m in r["median"].items()
            ),
        )
        per_round = ", ".join(f"{x:.2f}" for x in r["p50_example_vs_naive_per_round"])
        lines += [
            "",
            f"p50 of the example config / naive server per round: {per_round}; / transport ceiling "
            f"(medians): {r['p50_example_vs_ceiling']:.2f}×.",
            "",
        ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "examples" / "repository")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--window-ms", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        for model in MODELS:
            make_repository(args.model_repository, repo, model)
        logs = Path(tmp) / "logs"
        logs.mkdir()
        servers = {
            "driftserve": start_driftserve(repo, logs),
            "naive": start_naive(args.model_repository, logs),
            "aio": start_driftserve(repo, logs, ["--grpc-frontend", "aio"], label="aio"),
            "ceiling": start_grpc_ceiling(args.model_repository, logs),
            "ceiling-aio": start_grpc_ceiling(args.model_repository, logs, frontend="aio", label="ceiling-aio"),
        }
        try:
            for process in servers.values():
                process.wait_ready()
            for model in MODELS:
                runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
                for round_index in range(args.rounds):
                    for variant in round_order(list(VARIANTS), round_index):
                        if variant == "aio":
                            result = measure(servers[variant], f"{model}_example", args.window_ms, shape=False)
                        elif variant in OWN_PROCESS:
                            result = measure(servers[variant], model, args.window_ms, shape=True)
                        else:
                            result = measure(servers["driftserve"], f"{model}_{variant}", args.window_ms, shape=False)
                        runs[variant].append(result)
                        print(
                            f"{model} round {round_index + 1} {variant}: p50 {result['p50_ms']:.3f} ms, "
                            f"p99 {result['p99_ms']:.3f} ms, {result['throughput_rps']:.0f} rps",
                            flush=True,
                        )
                median = {v: median_run(rs) for v, rs in runs.items()}
                ratios = [e["p50_ms"] / n["p50_ms"] for e, n in zip(runs["example"], runs["naive"]) if n["p50_ms"] > 0]
                report["models"][model] = {
                    "runs": runs,
                    "median": median,
                    "p50_example_vs_naive_per_round": ratios,
                    "p50_example_vs_ceiling": median["example"]["p50_ms"] / median["ceiling"]["p50_ms"],
                }
        finally:
            for process in servers.values():
                process.stop()
    report.update(
        date=dt.date.today().isoformat(),
        machine=machine_text(),
        rounds=args.rounds,
        window_ms=args.window_ms,
        command="python -m benchmarks.idle_path_bench " + " ".join(argv if argv is not None else sys.argv[1:]),
    )
    (args.out / "idle_path.json").write_text(json.dumps(report, indent=2))
    lines = markdown(report)
    (args.out / "idle_path.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
