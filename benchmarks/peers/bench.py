"""driftserve next to real peer servers: the same ONNX model, the same client, side by side.

Servers (each serving the example model's served version, batching up to 64 rows with at most
500 µs of queueing, one ONNX Runtime session with one intra-op thread):

- ``driftserve``: ``driftserve serve`` on the example repository, its config unchanged;
- ``driftserve-slo``: the same, with the model's batching section replaced by only a latency
  objective (``slo_p99_ms: 20``): the untuned config, where the server chooses delay and batch;
- ``triton``: the tritonserver bundled in the ``nvidia-pytriton`` wheel, a Python-backend model
  running the ONNX file (``benchmarks/peers/triton_model.py``), ``dynamic_batching``;
- ``pytriton``: PyTriton binding a ``@batch`` function (``benchmarks/peers/pytriton_server.py``);
- ``mlserver``: MLServer with a custom ``MLModel`` runtime and adaptive batching
  (``benchmarks/peers/mlserver_runtime.py``);
- ``naive``: the naive inline-ORT gRPC server (``benchmarks/naive_server.py``), the floor.

Peers come from their own virtual environments (``benchmarks/peers/install.sh``); one that is not
installed or does not start is reported as skipped, with the reason. perf_analyzer (gRPC, unary)
measures every server at each concurrency level in interleaved rounds (order reversed every other
round); the report gives medians of throughput, p50, p99 and server CPU per inference (the CPU time
of the server's whole process tree over perf_analyzer's measured windows, per request served there:
see ``benchmarks/peers/cpu.py``), and per-round ratios driftserve / peer.

Writes ``benchmarks/results/peers.{json,md}``.

    python -m benchmarks.peers.bench --model-repository examples/repository [--rounds 3] [--concurrency 1,8,32]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

import driftserve
from benchmarks.common import ServerProcess, start_driftserve, start_naive
from benchmarks.peers.configs import read_signature
from benchmarks.peers.cpu import ProcessTree
from benchmarks.peers.report import markdown, ratios
from benchmarks.peers.servers import (
    DEFAULT_PEERS_DIR,
    ENVIRONMENTS,
    PeerEnv,
    PeerUnavailable,
    log_tail,
    peer_env,
    start_mlserver,
    start_pytriton,
    start_triton,
    wait_model_ready,
)
from benchmarks.perf_analyzer_runner import measure_with_cpu, median_run, round_order
from driftserve.core.machine import machine_text

ROOT = Path(__file__).resolve().parent.parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SERVERS = ("driftserve", "driftserve-slo", "triton", "pytriton", "mlserver", "naive")
SLO_BATCHING = {"slo_p99_ms": 20}
START_TIMEOUT_S = 240.0  # PyTriton starts Triton, then binds the model: slow on a busy 2-core box


def served_onnx(repository: Path, model: str) -> Path:
    """The ONNX file of the version driftserve serves for ``model`` (deployment.served_version, else the
    highest numeric version)."""
    config = yaml.safe_load((repository / model / "config.yaml").read_text()) or {}
    version = (config.get("deployment") or {}).get("served_version") or max(
        int(p.name) for p in (repository / model).iterdir() if p.name.isdigit()
    )
    return repository / model / str(version) / "model.onnx"


def slo_repository(repository: Path, model: str, dest: Path) -> Path:
    """A repository holding ``model`` as the example ships it but for its batching section, which
    is only ``SLO_BATCHING``."""
    shutil.copytree(repository / model, dest / model)
    config_path = dest / model / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) or {}
    config["batching"] = dict(SLO_BATCHING)
    config_path.write_text(yaml.safe_dump(config))
    return dest


def start_server(
    label: str, model: str, repository: Path, peers_dir: Path, workdir: Path, logs: Path
) -> tuple[ServerProcess, str]:
    """Start one server; returns it and a line describing what runs (versions). PeerUnavailable if a
    peer's environment is missing."""
    onnx = served_onnx(repository, model)
    if label == "driftserve":
        batching = (yaml.safe_load((repository / model / "config.yaml").read_text()) or {}).get("batching", {})
        return start_driftserve(
            repository, logs
        ), f"driftserve {driftserve.__version__}, example config: batching {batching}"
    if label == "driftserve-slo":
        slo_repo = slo_repository(repository, model, workdir / "slo_repository")
        return start_driftserve(
            slo_repo, logs, label=label
        ), f"driftserve {driftserve.__version__}, the example config with only batching {SLO_BATCHING}"
    if label == "naive":
        return start_naive(repository, logs), "benchmarks/naive_server.py (grpcio thread pool, ORT per request)"
    env: PeerEnv = peer_env(peers_dir, ENVIRONMENTS[label])
    if label == "triton":
        return start_triton(env, model, onnx, workdir, logs), f"tritonserver (Python backend) from {env.packages}"
    if label == "pytriton":
        return start_pytriton(env, model, onnx, logs), f"PyTriton from {env.packages}"
    if label == "mlserver":
        return start_mlserver(env, model, onnx, workdir, logs), f"MLServer from {env.packages}"
    raise ValueError(f"unknown server {label!r} (known: {', '.join(SERVERS)})")


def perf_analyzer_args(label: str, repository: Path, model: str) -> list[str]:
    """The naive server's metadata declares no batch dimension: give perf_analyzer the input shape."""
    return shape_args(repository, model) if label == "naive" else []


def shape_args(repository: Path, model: str) -> list[str]:
    """perf_analyzer's ``--shape`` for one row of each input of ``model``: for servers whose metadata
    (from ``benchmarks.naive_server``) declares no batch dimension."""
    signature = read_signature(served_onnx(repository, model))
    return [arg for t in signature.inputs for arg in ("--shape", f"{t.name}:1,{','.join(map(str, t.dims))}")]


def bench_model(args: argparse.Namespace, model: str, tmp: Path, log: Callable[[str], None]) -> dict[str, Any]:
    logs, workdir = tmp / f"logs_{model}", tmp / f"work_{model}"
    logs.mkdir()
    workdir.mkdir()
    servers: dict[str, ServerProcess] = {}
    described: dict[str, str] = {}
    skipped: dict[str, str] = {}
    trees: dict[str, ProcessTree] = {}
    try:
        for label in args.servers:
            try:
                servers[label], described[label] = start_server(
                    label, model, args.model_repository, args.peers_dir, workdir, logs
                )
            except PeerUnavailable as exc:
                skipped[label] = str(exc)
            except Exception as exc:  # whatever a peer's start-up raises, the others still run
                skipped[label] = f"could not start: {type(exc).__name__}: {exc}"
        for label, server in list(servers.items()):
            try:
                wait_model_ready(server, model, START_TIMEOUT_S)
                trees[label] = ProcessTree(server.proc.pid)
            except RuntimeError as exc:
                skipped[label] = f"did not start: {exc}; log: {log_tail(server.log_path)}"
                server.stop()
                del servers[label], described[label]
        for label, reason in skipped.items():
            log(f"{model}: {label} skipped: {reason}")
        extra = {label: perf_analyzer_args(label, args.model_repository, model) for label in servers}
        runs: dict[str, dict[str, list[dict[str, float]]]] = {label: {} for label in servers}
        running = list(servers)
        for clients in args.concurrency:
            for round_index in range(args.rounds):
                for label in round_order(running, round_index):
                    server = servers[label]
                    result = measure_with_cpu([server], model, clients, args.window_ms, extra[label], log)
                    runs[label].setdefault(str(clients), []).append(result)
                    log(
                        f"{model} {clients} clients round {round_index + 1} {label}: "
                        f"{result['throughput_rps']:.0f} req/s, p50 {result['p50_ms']:.2f} ms, "
                        f"p99 {result['p99_ms']:.2f} ms, CPU {result['server_cpu_us_per_inference']:.0f} µs/inference"
                    )
                    if server.proc.poll() is not None:  # crashed: report it, measure the others
                        skipped[label] = (
                            f"exited with status {server.proc.returncode} during the {clients}-client runs; "
                            f"log: {log_tail(server.log_path)}"
                        )
                        log(f"{model}: {label} {skipped[label]}")
                        running.remove(label)
    finally:
        for label, server in servers.items():
            tree = trees.get(label)
            if tree is not None:
                tree.refresh()  # before the root exits: its orphans are no longer below it afterwards
            server.stop()
            if tree is not None:
                # Workers or stubs the root left behind (the same processes: start times are checked).
                left = tree.kill(9)
                if left:
                    log(f"{model}: {label} left processes {left} behind; killed them")
    median = {label: {c: median_run(rs) for c, rs in by_c.items()} for label, by_c in runs.items()}
    return {
        "servers": described,
        "skipped": skipped,
        "runs": runs,
        "median": median,
        "versus": ratios(runs, "driftserve"),
        "versus_slo": ratios({k: v for k, v in runs.items() if k != "driftserve"}, "driftserve-slo")
        if "driftserve-slo" in runs
        else {},
    }


def _levels(text: str) -> list[int]:
    levels = [int(x) for x in text.split(",") if x.strip()]
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated client counts >= 1, got {text!r}")
    return levels


def _servers(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = set(names) - set(SERVERS)
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown server(s) {sorted(unknown)}; known: {', '.join(SERVERS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "examples" / "repository")
    parser.add_argument("--models", type=lambda s: s.split(","), default=["breast_cancer_mlp", "breast_cancer_lr"])
    parser.add_argument("--concurrency", type=_levels, default=[1, 8, 32], help="client counts, e.g. 1,8,32")
    parser.add_argument("--servers", type=_servers, default=list(SERVERS), help=f"subset of {','.join(SERVERS)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window-ms", type=int, default=3000, help="perf_analyzer measurement window")
    parser.add_argument("--peers-dir", type=Path, default=DEFAULT_PEERS_DIR, help="where install.sh put the peers")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--only-report", action="store_true", help="rewrite peers.md from peers.json in --out")
    args = parser.parse_args(argv)
    if args.only_report:
        return write_report(json.loads((args.out / "peers.json").read_text()), args.out, write_json=False)
    args.model_repository = args.model_repository.resolve()  # peers start in other directories
    if args.rounds < 1 or args.window_ms < 100:
        parser.error("--rounds must be >= 1 and --window-ms >= 100")
    if "driftserve" not in args.servers:
        parser.error("--servers must include driftserve (the ratios are driftserve / peer)")
    args.out.mkdir(parents=True, exist_ok=True)

    def log(line: str) -> None:
        print(line, flush=True)

    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        results = {model: bench_model(args, model, Path(tmp), log) for model in args.models}
    report = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_text(),
        "command": "python -m benchmarks.peers.bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "rounds": args.rounds,
        "window_ms": args.window_ms,
        "concurrency": args.concurrency,
        "models": results,
    }
    return write_report(report, args.out)


def write_report(report: dict[str, Any], out: Path, write_json: bool = True) -> int:
    """``peers.json`` (unless re-rendering) and ``peers.md`` in ``out``; prints the Markdown."""
    if write_json:
        (out / "peers.json").write_text(json.dumps(report, indent=2))
    lines = markdown(report)
    (out / "peers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
