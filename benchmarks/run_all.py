"""The side-by-side benchmark: driftserve against the naive baseline, interleaved, one run.

    python -m benchmarks.run_all --model-repository examples/repository --out benchmarks/results/
    python -m benchmarks.run_all ... --quick      # about a minute instead of about seven

Per model: the closed-loop sweep, an open-loop sweep, the highest open-loop rate meeting
`p99<100ms` and `p99<10ms`, and (from the sweep) p50 at concurrency 1. Writes `slo.json`,
`slo.md` and one `slo_<model>.png` per model. Without an importable driftserve server (or with
`--candidate naive`) the naive server plays both roles, which exercises the pipeline only.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import ServerProcess, start_driftserve, start_naive
from driftserve.bench.payload import build_arrays, serialize_requests
from driftserve.bench.report import plot_latency, write_json
from driftserve.bench.runner import LoadSpec, RunResult, run_load
from driftserve.bench.server_info import fetch_input_specs
from driftserve.bench.slo import parse_slo
from driftserve.bench.summary import summary_markdown
from driftserve.bench.sweep import find_max_rate, sweep
from driftserve.core.machine import machine

logger = logging.getLogger(__name__)

DEFAULT_MODELS = ("breast_cancer_lr", "breast_cancer_mlp")
MAX_RATE_SLOS = ("p99<100ms", "p99<10ms")


@dataclass(frozen=True)
class Plan:
    """Load levels and run lengths: the default (~7 min) or `--quick` (~1 min)."""

    closed_levels: tuple[int, ...]
    open_rates: tuple[float, ...]
    max_rate_steps: int
    start_rate: float
    warmup_s: float
    duration_s: float


FULL = Plan((1, 2, 4, 8, 16, 32, 64), (100, 250, 500, 1000, 2000, 4000), 3, 250, 0.5, 2.0)
QUICK = Plan((1, 8), (200,), 1, 250, 0.3, 1.0)


def _plan(args: argparse.Namespace) -> Plan:
    base = QUICK if args.quick else FULL
    return Plan(
        tuple(int(v) for v in args.closed_levels.split(",")) if args.closed_levels else base.closed_levels,
        tuple(float(v) for v in args.open_rates.split(",")) if args.open_rates else base.open_rates,
        base.max_rate_steps if args.max_rate_steps is None else args.max_rate_steps,
        base.start_rate,
        base.warmup_s if args.warmup_s is None else args.warmup_s,
        base.duration_s if args.duration_s is None else args.duration_s,
    )


def _specs_for(model: str, repository: Path, servers: list[ServerProcess], plan: Plan, protocol: str) -> list[LoadSpec]:
    tensors = fetch_input_specs(servers[0].target, model, "", 10.0)
    holdout = repository / model / "data" / "holdout.npz"
    arrays = build_arrays(tensors, 1, holdout if holdout.is_file() else None)
    requests = tuple(serialize_requests(arrays, tensors, protocol, model))
    return [
        LoadSpec(
            target=s.target,
            model=model,
            requests=requests,
            protocol=protocol,
            warmup_s=plan.warmup_s,
            duration_s=plan.duration_s,
            label=s.label,
        )
        for s in servers
    ]


def _measure_model(model: str, specs: list[LoadSpec], plan: Plan, progress: bool, out: Path) -> dict[str, Any]:
    def runner(spec: LoadSpec) -> RunResult:
        return run_load(spec, progress=progress)

    closed = sweep(specs, "closed", plan.closed_levels, runner)
    opened = sweep(specs, "open", plan.open_rates, runner)
    # The open sweep brackets each SLO's answer already; the search only bisects from there.
    searches = [
        find_max_rate(spec, parse_slo(text), plan.start_rate, plan.max_rate_steps, runner, prior=opened)
        for text in MAX_RATE_SLOS
        for spec in specs
    ]
    plot_latency(closed + opened, out / f"slo_{model}.png", f"{model}: latency vs throughput")
    return {"model": model, "closed": closed, "open": opened, "max_rate": searches}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__)
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--quick", action="store_true", help="about a minute instead of seven")
    parser.add_argument("--models", help=f"comma-separated (default: {','.join(DEFAULT_MODELS)})")
    parser.add_argument("--protocol", choices=("native", "v2"), default="v2")
    parser.add_argument(
        "--candidate",
        choices=("auto", "driftserve", "naive"),
        default="auto",
        help="server under test; auto: driftserve when importable, else naive",
    )
    parser.add_argument("--closed-levels", help="override, e.g. 1,4,16")
    parser.add_argument("--open-rates", help="override, e.g. 100,1000")
    parser.add_argument(
        "--max-rate-steps", type=int, help="override the search's rate count (0: judge the open sweep only)"
    )
    parser.add_argument("--warmup-s", type=float)
    parser.add_argument("--duration-s", type=float)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not args.model_repository.is_dir():
        parser.error(f"--model-repository {args.model_repository} is not a directory")
    models = args.models.split(",") if args.models else list(DEFAULT_MODELS)
    missing = [m for m in models if not (args.model_repository / m).is_dir()]
    if missing:
        parser.error(
            f"models {missing} not in {args.model_repository} (build it: python -m examples.build_repository --out DIR)"
        )
    candidate = args.candidate
    if candidate == "auto":
        candidate = "driftserve" if importlib.util.find_spec("driftserve.cli") else "naive"
        if candidate == "naive":
            logger.warning("driftserve.cli not importable: the naive server plays both roles")
    plan = _plan(args)
    args.out.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="driftserve-bench-logs-"))
    logger.info("server logs in %s", logs)
    servers = [
        start_driftserve(args.model_repository, logs)
        if candidate == "driftserve"
        else start_naive(args.model_repository, logs, "candidate-naive"),
        start_naive(args.model_repository, logs, "naive"),
    ]
    try:
        for server in servers:
            server.wait_ready()
        measured = [
            _measure_model(
                m,
                _specs_for(m, args.model_repository, servers, plan, args.protocol),
                plan,
                not args.no_progress,
                args.out,
            )
            for m in models
        ]
    finally:
        for server in servers:
            server.stop()
    info = machine()
    command = "python -m benchmarks.run_all " + " ".join(sys.argv[1:] if argv is None else argv)
    write_json(
        args.out / "slo.json",
        {
            "machine": info,
            "command": command,
            "candidate": candidate,
            "plan": plan.__dict__,
            "models": [
                {
                    "model": m["model"],
                    "closed": [r.to_dict() for r in m["closed"]],
                    "open": [r.to_dict() for r in m["open"]],
                    "max_rate": [s.to_dict() for s in m["max_rate"]],
                }
                for m in measured
            ],
        },
    )
    (args.out / "slo.md").write_text(summary_markdown(measured, info, command, [s.label for s in servers]))
    logger.info("wrote %s", args.out / "slo.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
