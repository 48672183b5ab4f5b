"""`driftserve bench`: the latency-SLO load generator's command line.

Exit codes: 0 when the run completed and every SLO held (or none was given), 1 when the first
target (the one under test; further targets are baselines) violated its SLO, 2 for usage or
connection errors.

    python -m driftserve bench --target 127.0.0.1:8001 --model breast_cancer_lr \
        --rate 2000 --slo 'p99<10ms' --json out.json --plot out.png
"""

from __future__ import annotations

import argparse
import sys

from driftserve.bench.defaults import DEFAULT_TARGET, EXIT_USAGE
from driftserve.core.security_flags import add_client_security_flags

# The third-party modules the load generator needs beyond a base install: the `bench` extra.
EXTRA_HINT = "pip install 'driftserve[bench]'"


def _add_arguments(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group("target")
    t.add_argument(
        "--target",
        action="append",
        metavar="[LABEL=]HOST:PORT",
        help=f"server to measure (default {DEFAULT_TARGET}); repeat to add baselines, measured interleaved",
    )
    t.add_argument(
        "--allow-remote", action="store_true", help="allow non-loopback targets (off: this tool measures local servers)"
    )
    t.add_argument("--protocol", choices=("native", "v2"), default="v2")
    t.add_argument(
        "--streaming", action="store_true", help="use PredictStream / ModelStreamInfer instead of unary calls"
    )
    t.add_argument("--model", required=True)
    t.add_argument("--model-version", default="")
    add_client_security_flags(p)
    d = p.add_argument_group("payload")
    d.add_argument("--data", help="an .npz file whose 'X' (or input-named) array gives the rows")
    d.add_argument("--rows-per-request", type=int, default=1)
    d.add_argument("--shape", help="input shape, e.g. -1,30 (skips ModelMetadata)")
    d.add_argument("--datatype", default="FP32", help="input datatype with --shape")
    d.add_argument("--input-name", default="input", help="input name with --shape")
    load = p.add_argument_group("load")
    mode = load.add_mutually_exclusive_group()
    mode.add_argument("--concurrency", type=int, help="closed loop: this many virtual clients")
    mode.add_argument("--rate", type=float, help="open loop: requests per second")
    mode.add_argument("--sweep", help="closed:1,2,4,...  or  open:100,200,...")
    mode.add_argument("--find-max-rate", action="store_true", help="search the highest open-loop rate meeting --slo")
    load.add_argument("--arrival", choices=("constant", "poisson"), default="constant")
    load.add_argument("--start-rate", type=float, default=100.0, help="first rate of the search")
    load.add_argument("--max-steps", type=int, default=8, help="rates the search may try")
    load.add_argument(
        "--no-confirm", action="store_true", help="do not re-measure a failing rate before the search believes it"
    )
    load.add_argument("--warmup-s", type=float, default=1.0)
    load.add_argument("--duration-s", type=float, default=5.0)
    load.add_argument("--timeout-s", type=float, default=10.0, help="per-request deadline")
    load.add_argument("--max-outstanding", type=int, default=10_000)
    load.add_argument(
        "--lag-threshold-ms",
        type=float,
        default=2.0,
        help="warn when sends run later than this behind schedule at p99 (timers have 1 ms resolution)",
    )
    load.add_argument("--workers", type=int, default=0, help="generator processes (0: auto)")
    load.add_argument("--seed", type=int, default=0)
    s = p.add_argument_group("SLO and output")
    s.add_argument("--slo", help="e.g. 'p99<100ms@2000rps,p50<=1ms'")
    s.add_argument("--slo-file", help="YAML SLO file")
    s.add_argument("--json", help="write results here")
    s.add_argument("--markdown", help="write the table here")
    s.add_argument("--plot", help="write a latency-vs-throughput PNG here")
    s.add_argument("--no-progress", action="store_true")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `bench` subcommand; its `func` returns the exit code."""
    p = subparsers.add_parser("bench", help="latency-SLO load generator", description=__doc__.splitlines()[0])
    _add_arguments(p)
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    """Run ``driftserve bench``; exit 2 with the install hint when the ``bench`` extra is missing."""
    try:
        from driftserve.bench.command import run
    except ModuleNotFoundError as exc:
        print(f"driftserve bench needs {exc.name!r}, which the bench extra installs: {EXTRA_HINT}", file=sys.stderr)
        return EXIT_USAGE
    return run(args)
