"""Mirroring overhead: server throughput with the mirror tap at sample rate 1.0 vs no mirroring.

One server process, mirroring to a real sidecar process, serves two copies of each model: one
with a ``drift`` section (every request mirrored) and one without (never mirrored). perf_analyzer
measures them round by round in ABBA order (mirrored then plain, then plain then mirrored), so a
drift of the shared machine's speed within a round does not favour either variant; the headline
is the median of the per-round throughput ratios. The server's CPU time per request (``utime +
stime`` from ``/proc/<pid>/stat`` over the requests it counted) says whether a difference is the
server's own work or the machine being busy; the CPU the mirror adds per request is the median of
the per-round differences (mirrored minus plain, measured back to back). Shadow versions are left
out so the sidecar's own compute stays what drift needs.

``--baseline-source DIR`` compares with another build: a source tree (``git archive <commit> | tar
-x -C DIR``) whose server and sidecar run beside this build's (``PYTHONPATH=DIR``), measured in the
same rounds (builds in ABBA order too), so both see the same machine; a second table gives the CPU
the mirror adds per request and the throughput ratio of each build. Writes
``benchmarks/results/mirror.{json,md}``.

    python -m benchmarks.mirror_bench --model-repository examples/repository [--rounds 6] [--baseline-source DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import grpc
import yaml

from benchmarks.common import ServerProcess, markdown_table, start_driftserve, start_sidecar
from benchmarks.perf_analyzer_runner import (
    median_run,
    nan_median,
    round_order,
    run_perf_analyzer,
    throughput_ratios,
)
from driftserve.api import grpc_service_pb2 as pb
from driftserve.api import grpc_service_pb2_grpc as pb_grpc
from driftserve.core.machine import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CASES = (("breast_cancer_lr", 8), ("breast_cancer_mlp", 32))
VARIANTS = ("mirrored", "plain")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def make_repository(source: Path, dest: Path) -> list[tuple[str, str, int]]:
    """(model, variant, concurrency) for each served copy."""
    plan = []
    for model, concurrency in CASES:
        config = yaml.safe_load((source / model / "config.yaml").read_text())
        config.pop("deployment", None)
        version = max(int(p.name) for p in (source / model).iterdir() if p.name.isdigit())
        config["version_policy"] = {"specific": {"versions": [version]}}
        mirrored = dict(config, drift={**config["drift"], "mirror": {"sample_rate": 1.0}})
        plain = {k: v for k, v in config.items() if k != "drift"}
        for name, cfg in ((f"{model}_mirrored", mirrored), (f"{model}_plain", plain)):
            shutil.copytree(source / model / str(version), dest / name / str(version))
            shutil.copytree(source / model / "data", dest / name / "data")
            (dest / name / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        plan += [(model, "mirrored", concurrency), (model, "plain", concurrency)]
    return plan


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15


def success_count(target: str, model: str) -> int:
    """Requests a model's served version completed successfully, from ModelStatistics."""
    with grpc.insecure_channel(target) as channel:
        stats = (
            pb_grpc.GRPCInferenceServiceStub(channel)
            .ModelStatistics(pb.ModelStatisticsRequest(name=model))
            .model_stats[0]
        )
    return stats.inference_stats.success.count


def measure(
    server_target: str,
    server_pid: int,
    sidecar_pid: int,
    name: str,
    concurrency: int,
    window_ms: int,
    stability_percent: int = 60,
) -> dict[str, float]:
    """One perf_analyzer run plus the server's and the sidecar's CPU per request it served."""
    requests_before = success_count(server_target, name)
    server_before, sidecar_before = cpu_seconds(server_pid), cpu_seconds(sidecar_pid)
    try:
        result = run_perf_analyzer(server_target, name, concurrency, window_ms, stability_percent)
    except RuntimeError as exc:  # no stable measurement on a busy machine: the CPU per request still counts
        print(f"{name}: {str(exc).strip().splitlines()[-1]}; throughput and latency left out", flush=True)
        nan = float("nan")
        result = {"throughput_rps": nan, "p50_ms": nan, "p99_ms": nan}
    server_cpu, sidecar_cpu = cpu_seconds(server_pid) - server_before, cpu_seconds(sidecar_pid) - sidecar_before
    requests = success_count(server_target, name) - requests_before
    result["server_cpu_us_per_request"] = server_cpu / max(requests, 1) * 1e6
    result["sidecar_cpu_us_per_request"] = sidecar_cpu / max(requests, 1) * 1e6
    return result


def added_cpu_us(runs: dict[str, list[dict[str, float]]], model: str) -> float:
    """Median over rounds of the server CPU per request, mirrored minus plain (paired within a round)."""
    key = "server_cpu_us_per_request"
    pairs = zip(runs[f"{model}_mirrored"], runs[f"{model}_plain"])
    return nan_median([mirrored[key] - plain[key] for mirrored, plain in pairs])


def comparison_lines(source: Path, baseline: dict[str, list[dict[str, float]]], runs: dict[str, Any]) -> list[str]:
    """The added server CPU and the throughput ratio of the baseline build and this one, per model."""

    def ratio(results: dict[str, list[dict[str, float]]], model: str) -> str:
        return f"{nan_median(throughput_ratios(results[f'{model}_mirrored'], results[f'{model}_plain'])):.3f}"

    rows = [
        (
            model,
            concurrency,
            f"{added_cpu_us(baseline, model):+.1f}",
            f"{added_cpu_us(runs, model):+.1f}",
            ratio(baseline, model),
            ratio(runs, model),
        )
        for model, concurrency in CASES
    ]
    header = (
        "model",
        "clients",
        "added server CPU, baseline (µs/req)",
        "added server CPU, this build (µs/req)",
        "ratio, baseline",
        "ratio, this build",
    )
    return [
        f"Baseline: the build in `{source}`, its server and sidecar measured in the same rounds as this "
        "build's (builds and variants in ABBA order). Added CPU: the median of the per-round differences, "
        "mirrored minus plain.",
        "",
        *markdown_table(header, rows),
        "",
    ]


def start_stack(repo: Path, log_dir: Path, source: Path | None) -> tuple[ServerProcess, ServerProcess]:
    """A sidecar and a server mirroring to it; the build in ``source`` when given."""
    log_dir.mkdir()
    sidecar, address = start_sidecar(repo, log_dir, source=source)
    return start_driftserve(repo, log_dir, ["--mirror-address", address], source=source), sidecar


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "examples" / "repository")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--window-ms", type=int, default=4000)
    parser.add_argument(
        "--stability-percent",
        type=int,
        default=60,
        help="perf_analyzer's -s; raise it on a busy machine, where the CPU per request is the figure to read",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--baseline-source", type=Path, help="source tree of another build, measured beside this one")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    builds: list[tuple[str, Path | None]] = [("this", None)]
    if args.baseline_source is not None:
        builds.append(("baseline", args.baseline_source.resolve()))
    results: dict[str, dict[str, list[dict[str, float]]]] = {build: {} for build, _ in builds}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repository"
        make_repository(args.model_repository, repo)
        stacks: dict[str, tuple[ServerProcess, ServerProcess]] = {}
        try:
            for build, source in builds:
                stacks[build] = start_stack(repo, Path(tmp) / build, source)
            for server, sidecar in stacks.values():
                sidecar.wait_ready()
                server.wait_ready()
            for round_index in range(args.rounds):
                for model, concurrency in CASES:
                    for build, _ in round_order(builds, round_index):
                        server, sidecar = stacks[build]
                        for variant in round_order(VARIANTS, round_index):
                            name = f"{model}_{variant}"
                            result = measure(
                                server.target,
                                server.proc.pid,
                                sidecar.proc.pid,
                                name,
                                concurrency,
                                args.window_ms,
                                args.stability_percent,
                            )
                            results[build].setdefault(name, []).append(result)
                            print(
                                f"round {round_index + 1} {build} build {name} c={concurrency}: "
                                f"{result['throughput_rps']:.0f} rps, p99 {result['p99_ms']:.2f} ms, server CPU "
                                f"{result['server_cpu_us_per_request']:.0f} µs/request",
                                flush=True,
                            )
        finally:
            for server, sidecar in stacks.values():
                server.stop()
                sidecar.stop()
    runs = results["this"]
    median = {name: median_run(rs) for name, rs in runs.items()}
    round_ratios = {model: throughput_ratios(runs[f"{model}_mirrored"], runs[f"{model}_plain"]) for model, _ in CASES}
    ratios = {model: nan_median(r) for model, r in round_ratios.items()}
    added = {model: added_cpu_us(runs, model) for model, _ in CASES}
    info = machine()
    command = "python -m benchmarks.mirror_bench " + " ".join(argv if argv is not None else sys.argv[1:])

    def row(model: str, concurrency: int) -> tuple[object, ...]:
        plain, mirrored = median[f"{model}_plain"], median[f"{model}_mirrored"]
        return (
            model,
            concurrency,
            f"{plain['throughput_rps']:.0f}",
            f"{mirrored['throughput_rps']:.0f}",
            f"{ratios[model]:.3f}",
            f"{plain['p99_ms']:.2f}",
            f"{mirrored['p99_ms']:.2f}",
            f"{plain['server_cpu_us_per_request']:.0f}",
            f"{mirrored['server_cpu_us_per_request']:.0f}",
            f"{added[model]:+.1f}",
            f"{mirrored['sidecar_cpu_us_per_request']:.0f}",
        )

    lines = [
        "### Mirroring overhead: sample rate 1.0 vs no mirroring (server and sidecar on the same machine)",
        "",
        f"`{command}` — perf_analyzer, {args.rounds} rounds of {args.window_ms / 1000:g} s in ABBA order; "
        f"ratio: median of the per-round ratios, other columns: medians; CPU: server process (and sidecar) "
        f"time per request served; {info['nproc']} cores, {info['cpu']}; {info['date_utc']} UTC.",
        "",
        *markdown_table(
            (
                "model",
                "clients",
                "no mirror (req/s)",
                "mirror 1.0 (req/s)",
                "ratio",
                "p99 no mirror (ms)",
                "p99 mirror (ms)",
                "server CPU no mirror (µs/req)",
                "server CPU mirror (µs/req)",
                "added by the mirror (µs/req)",
                "sidecar CPU mirror (µs/req)",
            ),
            (row(model, concurrency) for model, concurrency in CASES),
        ),
        "",
    ]
    report: dict[str, Any] = {
        "command": command,
        "machine": info,
        "rounds": args.rounds,
        "order": "ABBA",
        "runs": runs,
        "median": median,
        "round_throughput_ratios": round_ratios,
        "throughput_ratio": ratios,
        "added_server_cpu_us_per_request": added,
        "date": dt.date.today().isoformat(),
    }
    if args.baseline_source is not None:
        baseline = results["baseline"]
        lines += comparison_lines(args.baseline_source, baseline, runs)
        report["baseline"] = {
            "source": str(args.baseline_source),
            "runs": baseline,
            "added_server_cpu_us_per_request": {model: added_cpu_us(baseline, model) for model, _ in CASES},
        }
    (args.out / "mirror.json").write_text(json.dumps(report, indent=2))
    (args.out / "mirror.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
