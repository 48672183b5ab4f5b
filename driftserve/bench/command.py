"""What ``driftserve bench`` does once its options are parsed: build payloads, run, judge, report."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from driftserve.bench.defaults import DEFAULT_TARGET, EXIT_OK, EXIT_SLO_VIOLATED, EXIT_USAGE
from driftserve.bench.payload import PayloadError, TensorSpec, build_arrays, parse_shape, serialize_requests
from driftserve.bench.report import markdown_table, plot_latency, write_json
from driftserve.bench.runner import LoadError, LoadSpec, RunResult, run_load
from driftserve.bench.server_info import TargetError, check_target, fetch_input_specs, wait_connected
from driftserve.bench.slo import SLO, SLOError, Verdict, evaluate, load_slo_file, parse_slo
from driftserve.bench.sweep import Runner, SweepError, find_max_rate, parse_sweep, sweep
from driftserve.core.client import ClientSecurity
from driftserve.core.machine import machine
from driftserve.core.startup import StartupError

logger = logging.getLogger(__name__)


class UsageError(ValueError):
    """Options that contradict each other."""


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


def _specs(args: argparse.Namespace, target: str, security: ClientSecurity) -> list[TensorSpec]:
    if args.shape:
        return [TensorSpec(args.input_name, args.datatype.upper(), parse_shape(args.shape))]
    return fetch_input_specs(target, args.model, args.model_version, args.timeout_s, security)


def _security(args: argparse.Namespace) -> ClientSecurity:
    """TLS files and token of the targets (--tls-ca, --tls-cert, --tls-key, --token, --token-file)."""
    try:
        return ClientSecurity.from_args(args)
    except StartupError as exc:
        raise UsageError(exc.message) from None


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
        raise UsageError(
            f"the SLO is judged at {slo.rate_rps:g} rps (open loop); drop --concurrency/--sweep or the SLO's @rate"
        )
    if args.sweep:
        parse_sweep(args.sweep)


def _base_spec(
    args: argparse.Namespace, label: str, target: str, requests: tuple[bytes, ...], security: ClientSecurity
) -> LoadSpec:
    return LoadSpec(
        target=target,
        model=args.model,
        requests=requests,
        protocol=args.protocol,
        version=args.model_version,
        streaming=args.streaming,
        arrival=args.arrival,
        warmup_s=args.warmup_s,
        duration_s=args.duration_s,
        timeout_s=args.timeout_s,
        max_outstanding=args.max_outstanding,
        lag_threshold_s=args.lag_threshold_ms / 1e3,
        workers=args.workers,
        seed=args.seed,
        label=label,
        rows_per_request=args.rows_per_request,
        security=security,
    )


def run(args: argparse.Namespace) -> int:
    """Run what the options ask for; print the table and verdicts; return the exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        slo = _slo(args)
        _validate(args, slo)
        targets = _targets(args)
        security = _security(args)
        for _, target in targets:
            wait_connected(target, min(args.timeout_s, 10.0), security)
        tensor_specs = _specs(args, targets[0][1], security)
        arrays = build_arrays(tensor_specs, args.rows_per_request, args.data, seed=args.seed)
        requests = tuple(serialize_requests(arrays, tensor_specs, args.protocol, args.model, args.model_version))
        specs = [_base_spec(args, label, target, requests, security) for label, target in targets]
        return _execute(args, specs, slo)
    except (SLOError, UsageError, TargetError, PayloadError, SweepError, LoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _run_search(
    args: argparse.Namespace, specs: list[LoadSpec], slo: SLO, runner: Runner, output: dict[str, Any]
) -> tuple[list[RunResult], int]:
    searches = [find_max_rate(s, slo, args.start_rate, args.max_steps, runner, not args.no_confirm) for s in specs]
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


def _run_levels(
    args: argparse.Namespace, specs: list[LoadSpec], slo: SLO | None, runner: Runner, output: dict[str, Any]
) -> tuple[list[RunResult], int]:
    mode, levels = _load_levels(args, slo)
    results = sweep(specs, mode, levels, runner)
    verdicts: list[tuple[RunResult, Verdict]] = []
    for result in results:
        if slo is None:
            continue
        verdict = evaluate(slo, result.percentiles_us(), result.error_rate)
        verdicts.append((result, verdict))
        print(
            f"{result.label} {result.mode} {result.level:g}: SLO {verdict.slo} "
            f"{'PASS' if verdict.passed else 'FAIL'} "
            + "; ".join(f"{o.objective}: {o.measured:g} {o.unit}" for o in verdict.results)
        )
    output["verdicts"] = [{"label": r.label, "level": r.level, **v.to_dict()} for r, v in verdicts]
    violated = any(not v.passed for r, v in verdicts if r.label == specs[0].label)
    return results, EXIT_SLO_VIOLATED if violated else EXIT_OK


def _execute(args: argparse.Namespace, specs: list[LoadSpec], slo: SLO | None) -> int:
    progress = not args.no_progress

    def runner(spec: LoadSpec) -> RunResult:
        return run_load(spec, progress=progress)

    output: dict[str, Any] = {"machine": machine(), "command": sys.argv, "slo": slo.label if slo else None}
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
        print("error: no request succeeded; check --model, --protocol and the payload options", file=sys.stderr)
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
