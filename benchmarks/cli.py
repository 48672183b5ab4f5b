"""`driftserve bench`: the latency-SLO load generator's command line.

Exit codes: 0 when the run completed and every SLO held (or none was given), 1 when the first
target (the one under test; further targets are baselines) violated its SLO, 2 for usage or
connection errors.

    python -m benchmarks.cli bench --target 127.0.0.1:8001 --model breast_cancer_lr \
        --rate 2000 --slo 'p99<10ms' --json out.json --plot out.png
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from benchmarks.loadgen.payload import PayloadError, TensorSpec, build_arrays, parse_shape, \
    serialize_requests
from benchmarks.loadgen.report import machine, markdown_table, plot_latency, write_json
from benchmarks.loadgen.runner import LoadError, LoadSpec, RunResult, run_load
from benchmarks.loadgen.server_info import TargetError, check_target, fetch_input_specs, \
    wait_connected
from benchmarks.loadgen.slo import SLO, SLOError, Verdict, evaluate, load_slo_file, parse_slo
from benchmarks.loadgen.sweep import Runner, SweepError, find_max_rate, parse_sweep, sweep

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_SLO_VIOLATED, EXIT_USAGE = 0, 1, 2
# driftserve's default gRPC port.
DEFAULT_TARGET = "127.0.0.1:8001"


class UsageError(ValueError):
    """Options that contradict each other."""


def _add_arguments(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group("target")
    t.add_argument("--target", action="append", metavar="[LABEL=]HOST:PORT",
                   help=f"server to measure (default {DEFAULT_TARGET}); repeat to add "
                        "baselines, measured interleaved")
    t.add_argument("--allow-remote", action="store_true",
                   help="allow non-loopback targets (off: this tool measures local servers)")
    t.add_argument("--protocol", choices=("native", "v2"), default="v2")
    t.add_argument("--streaming", action="store_true",
                   help="use PredictStream / ModelStreamInfer instead of unary calls")
    t.add_argument("--model", required=True)
    t.add_argument("--model-version", default="")
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
    mode.add_argument("--find-max-rate", action="store_true",
                      help="search the highest open-loop rate meeting --slo")
    load.add_argument("--arrival", choices=("constant", "poisson"), default="constant")
    load.add_argument("--start-rate", type=float, default=100.0, help="first rate of the search")
    load.add_argument("--max-steps", type=int, default=8, help="rates the search may try")
    load.add_argument("--no-confirm", action="store_true",
                      help="do not re-measure a failing rate before the search believes it")
    load.add_argument("--warmup-s", type=float, default=1.0)
    load.add_argument("--duration-s", type=float, default=5.0)
    load.add_argument("--timeout-s", type=float, default=10.0, help="per-request deadline")
    load.add_argument("--max-outstanding", type=int, default=10_000)
    load.add_argument("--lag-threshold-ms", type=float, default=2.0,
                      help="warn when sends run later than this behind schedule at p99 "
                           "(timers have 1 ms resolution)")
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
    p = subparsers.add_parser("bench", help="latency-SLO load generator",
                              description=__doc__.splitlines()[0])
    _add_arguments(p)
    p.set_defaults(func=run_bench)


def _targets(args: argparse.Namespace) -> list[tuple[str, str]]:
    out = []
    for item in args.target or [DEFAULT_TARGET]:
        label, sep, target = item.rpartition("=")
        out.append((label if sep else target, check_target(target, args.allow_remote)))
    labels = [label for label, _ in out]
    if len(set(labels)) != len(labels):
        raise UsageError(f"targets need distinct labels, got {labels}; use LABEL=HOST:PORT")
    return out


def _slo(args: argparse.Namespace) -> SLO | None:
    if args.slo and args.slo_file:
        raise UsageError("give --slo or --slo-file, not both")
    if args.slo:
        return parse_slo(args.slo)
    return load_slo_file(args.slo_file) if args.slo_file else None


def _specs(args: argparse.Namespace, target: str) -> list[TensorSpec]:
    if args.shape:
        return [TensorSpec(args.input_name, args.datatype.upper(), parse_shape(args.shape))]
    return fetch_input_specs(target, args.model, args.model_version, args.timeout_s)


def _validate(args: argparse.Namespace, slo: SLO | None) -> None:
    if args.duration_s <= 0 or args.warmup_s < 0 or args.timeout_s <= 0:
        raise UsageError("--duration-s and --timeout-s must be positive, --warmup-s >= 0")
    if args.concurrency is not None and args.concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, got {args.concurrency}")
    if args.rate is not None and args.rate <= 0:
        raise UsageError(f"--rate must be positive, got {args.rate}")
    if args.max_outstanding < 1 or args.workers < 0 or args.rows_per_request < 1:
        raise UsageError("--max-outstanding and --rows-per-request must be >= 1, --workers >= 0")
    if args.find_max_rate and slo is None:
        raise UsageError("--find-max-rate needs --slo or --slo-file")
    if args.max_steps < 1 or args.start_rate <= 0:
        raise UsageError("--max-steps must be at least 1 and --start-rate positive")
    if slo and slo.rate_rps and args.rate and slo.rate_rps != args.rate:
        raise UsageError(f"--rate {args.rate:g} contradicts the SLO's rate {slo.rate_rps:g} rps")
    if slo and slo.rate_rps and (args.concurrency or args.sweep):
        raise UsageError(f"the SLO is judged at {slo.rate_rps:g} rps (open loop); drop "
                         "--concurrency/--sweep or the SLO's @rate")
    if args.sweep:
        parse_sweep(args.sweep)


def _base_spec(args: argparse.Namespace, label: str, target: str,
               requests: tuple[bytes, ...]) -> LoadSpec:
    return LoadSpec(
        target=target, model=args.model, requests=requests, protocol=args.protocol,
        version=args.model_version, streaming=args.streaming, arrival=args.arrival,
        warmup_s=args.warmup_s, duration_s=args.duration_s, timeout_s=args.timeout_s,
        max_outstanding=args.max_outstanding, lag_threshold_s=args.lag_threshold_ms / 1e3,
        workers=args.workers, seed=args.seed, label=label, rows_per_request=args.rows_per_request,
    )


def run_bench(args: argparse.Namespace) -> int:
    """Run what the options ask for; print the table and verdicts; return the exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        slo = _slo(args)
        _validate(args, slo)
        targets = _targets(args)
        for _, target in targets:
            wait_connected(target, min(args.timeout_s, 10.0))
        tensor_specs = _specs(args, targets[0][1])
        arrays = build_arrays(tensor_specs, args.rows_per_request, args.data, seed=args.seed)
        requests = tuple(serialize_requests(arrays, tensor_specs, args.protocol, args.model,
                                            args.model_version))
        specs = [_base_spec(args, label, target, requests) for label, target in targets]
        return _execute(args, specs, slo)
    except (SLOError, UsageError, TargetError, PayloadError, SweepError, LoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _run_search(args: argparse.Namespace, specs: list[LoadSpec], slo: SLO, runner: Runner,
                output: dict[str, Any]) -> tuple[list[RunResult], int]:
    searches = [find_max_rate(s, slo, args.start_rate, args.max_steps, runner,
                              not args.no_confirm) for s in specs]
    output["max_rate"] = [s.to_dict() for s in searches]
    for s in searches:
        found = "none" if s.max_rate_rps is None else f"{s.max_rate_rps:g} rps"
        if s.max_rate_rps is not None and not s.bounded:
            found = f"at least {found} (no rate tried failed; raise --max-steps)"
        print(f"{s.label}: highest rate meeting {s.slo}: {found}")
    code = EXIT_OK if searches[0].max_rate_rps is not None else EXIT_SLO_VIOLATED
    return [r for search in searches for r, _ in search.steps], code


def _load_levels(args: argparse.Namespace, slo: SLO | None) -> tuple[str, list[float]]:
    if args.sweep:
        return parse_sweep(args.sweep)
    if args.rate:
        return "open", [args.rate]
    if slo is not None and slo.rate_rps and not args.concurrency:
        return "open", [slo.rate_rps]
    return "closed", [args.concurrency or 1]


def _run_levels(args: argparse.Namespace, specs: list[LoadSpec], slo: SLO | None,
                runner: Runner, output: dict[str, Any]) -> tuple[list[RunResult], int]:
    mode, levels = _load_levels(args, slo)
    results = sweep(specs, mode, levels, runner)
    verdicts: list[tuple[RunResult, Verdict]] = []
    for result in results:
        if slo is None:
            continue
        verdict = evaluate(slo, result.percentiles_us(), result.error_rate)
        verdicts.append((result, verdict))
        print(f"{result.label} {result.mode} {result.level:g}: SLO {verdict.slo} "
              f"{'PASS' if verdict.passed else 'FAIL'} " + "; ".join(
                  f"{o.objective}: {o.measured:g} {o.unit}" for o in verdict.results))
    output["verdicts"] = [{"label": r.label, "level": r.level, **v.to_dict()}
                          for r, v in verdicts]
    violated = any(not v.passed for r, v in verdicts if r.label == specs[0].label)
    return results, EXIT_SLO_VIOLATED if violated else EXIT_OK


def _execute(args: argparse.Namespace, specs: list[LoadSpec], slo: SLO | None) -> int:
    progress = not args.no_progress

    def runner(spec: LoadSpec) -> RunResult:
        return run_load(spec, progress=progress)

    output: dict[str, Any] = {"machine": machine(), "command": sys.argv,
                              "slo": slo.label if slo else None}
    if args.find_max_rate:
        assert slo is not None  # checked in _validate
        results, exit_code = _run_search(args, specs, slo, runner, output)
    else:
        results, exit_code = _run_levels(args, specs, slo, runner, output)
    for result in results:
        for warning in result.warnings:
            print(f"warning: {result.label}: {warning}", file=sys.stderr)
    if results and all(r.ok == 0 for r in results):
        # Nothing succeeded anywhere: a wrong model, payload or protocol, not a latency verdict.
        print("error: no request succeeded; check --model, --protocol and the payload options",
              file=sys.stderr)
        exit_code = EXIT_USAGE
    table = markdown_table(results)
    print(table)
    output["results"] = [r.to_dict() for r in results]
    output["exit_code"] = exit_code
    if args.json:
        write_json(args.json, output)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(table)
    if args.plot:
        plot_latency(results, args.plot, f"{args.model} ({args.protocol})")
    return exit_code


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.cli bench ...`."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
