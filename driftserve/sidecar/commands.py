"""The sidecar's subcommands: ``sidecar``, ``drift profile``, ``drift report``.

``register`` adds them to the ``driftserve`` command (``driftserve.cli``). Heavy imports happen
inside the commands so ``driftserve --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from driftserve.core.commandline import configure_logging, settings_from_args
from driftserve.core.security_flags import add_client_security_flags, add_security_flags
from driftserve.sidecar.fleet.commands import register_fleet
from driftserve.sidecar.settings import DEFAULT_LISTEN, SidecarSettings

logger = logging.getLogger(__name__)

DEFAULT_REPORT_TIMEOUT_S = 10.0


def sidecar_settings(args: argparse.Namespace) -> SidecarSettings:
    """Flags given on the command line override DRIFTSERVE_SIDECAR_* variables, which override defaults."""
    return settings_from_args(SidecarSettings, args)


def _cmd_sidecar(args: argparse.Namespace) -> int:
    settings = sidecar_settings(args)
    configure_logging(settings.log_level)
    import uvloop

    from driftserve.core.errors import ConfigError
    from driftserve.core.startup import StartupError
    from driftserve.sidecar.app import serve

    try:
        return uvloop.run(serve(settings))
    except (StartupError, ConfigError) as exc:
        print(f"driftserve sidecar: {exc.message}", file=sys.stderr, flush=True)
        return exc.exit_code if isinstance(exc, StartupError) else 2


def _cmd_profile(args: argparse.Namespace) -> int:
    configure_logging(logging.INFO)
    from driftserve.sidecar.drift.profile import profile_command

    try:
        profile = profile_command(Path(args.data), Path(args.out), args.categorical, args.bins, args.outputs_from_model)
    except (ValueError, OSError) as exc:
        print(f"driftserve drift profile: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.out}: {len(profile.features)} features, {len(profile.outputs)} outputs, "
        f"{profile.features[0].n_rows if profile.features else 0} rows"
    )
    return 0


def _fmt(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "-"


def print_report(report: Any, out: TextIO, only_flagged: bool = False) -> None:
    """Print one ``DriftReport`` message as an aligned table."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(report.generated_unix_s)) if report.generated_unix_s else "-"
    print(f"model {report.model}: {report.rows_seen} rows, {report.batches_seen} batches (as of {stamp} UTC)", file=out)
    if report.HasField("fleet"):
        replicas = report.fleet.replicas
        print(f"fleet-wide, merged from {len(replicas)} replicas:", file=out)
        for r in replicas:
            print(f"  {r.address}  {r.status}  {r.rows} rows" + (f"  ({r.error})" if r.error else ""), file=out)
    header = ("feature", "kind", "window", "rows", "psi", "psi_exp", "ks", "p_corr", "missing", "status")
    rows = [header]
    for f in report.features:
        if only_flagged and f.status in ("ok", "insufficient"):
            continue
        rows.append(
            (
                f.feature,
                f.kind,
                f.window,
                str(f.window_rows),
                _fmt(f.psi),
                _fmt(f.psi_expected),
                _fmt(f.ks_statistic),
                _fmt(f.ks_pvalue_corrected, 3),
                _fmt(f.missing_share, 3),
                f.status,
            )
        )
    if len(rows) > 1:
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        for r in rows:
            print(
                "  ".join(c.ljust(w) if i < 3 or i == 9 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))),
                file=out,
            )
    else:
        print("  (no features to show)", file=out)
    for f in report.features:
        if f.status == "alert":
            print(f"ALERT {f.feature} ({f.window}): {'; '.join(f.reasons)}", file=out)
    if report.HasField("shadow"):
        s = report.shadow
        print(
            f"shadow v{s.shadow_version} vs primary v{s.primary_version or '?'}: {s.rows} rows, agreement "
            f"{_fmt(s.agreement)}, |delta| mean {_fmt(s.mean_abs_delta, 6)} max {_fmt(s.max_abs_delta, 6)}, "
            f"p50 inference primary {_fmt(s.primary_inference_p50_s * 1e3, 3)} ms shadow "
            f"{_fmt(s.shadow_latency_p50_s * 1e3, 3)} ms (primary end to end in the server "
            f"{_fmt(s.primary_latency_p50_s * 1e3, 3)} ms), errors {s.errors}",
            file=out,
        )


def _cmd_report(args: argparse.Namespace) -> int:
    import grpc

    from driftserve.api import driftserve_pb2, driftserve_pb2_grpc
    from driftserve.core.client import ClientSecurity, plaintext_hint
    from driftserve.core.startup import StartupError

    try:
        security = ClientSecurity.from_args(args)
    except StartupError as exc:
        print(f"driftserve drift report: {exc.message}", file=sys.stderr)
        return exc.exit_code
    metadata = security.metadata
    try:
        with security.channel(args.address) as channel:
            stub = driftserve_pb2_grpc.MonitorStub(channel)
            models = (
                [args.model]
                if args.model
                else list(
                    stub.ListModels(
                        driftserve_pb2.ListModelsRequest(), timeout=args.timeout_s, metadata=metadata
                    ).models
                )
            )
            if not models:
                print(f"the sidecar at {args.address} monitors no models", file=sys.stderr)
                return 1
            for i, name in enumerate(models):
                request = driftserve_pb2.DriftReportRequest(model=name, window=args.window or "")
                report = stub.GetDriftReport(request, timeout=args.timeout_s, metadata=metadata)
                if i:
                    print()
                print_report(report, sys.stdout, args.only_flagged)
    except grpc.RpcError as exc:
        print(
            f"driftserve drift report: {args.address}: {exc.code().name}: {exc.details()}"
            f"{plaintext_hint(exc, security)}",
            file=sys.stderr,
        )
        return 1
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``sidecar`` and ``drift`` (``profile``, ``report``) subcommands."""
    side = sub.add_parser(
        "sidecar",
        help="run the drift sidecar (mirror ingest, drift, shadow, dashboard)",
        epilog="start-up errors: one line on stderr, no traceback; exit code 2 when a setting must change "
        "(a missing or invalid setting, a missing repository, an address or port in use, a missing or "
        "unreadable --tls-* or tokens file, a certificate without its key).",
    )
    side.add_argument("--model-repository", help="model repository [DRIFTSERVE_SIDECAR_MODEL_REPOSITORY]")
    side.add_argument("--listen", help=f"gRPC address host:port or unix:/path [default {DEFAULT_LISTEN}]")
    side.add_argument(
        "--http-host",
        help="HTTP bind address; the HTTP endpoints have no authentication, so only this machine by default "
        "[DRIFTSERVE_SIDECAR_HTTP_HOST, default 127.0.0.1]",
    )
    side.add_argument("--http-port", type=int, help="HTTP port for /metrics, /api, /dashboard; -1 = off [default 8004]")
    side.add_argument("--log-level", help="logging level [default INFO]")
    side.add_argument("--report-interval-s", type=float, help="seconds between drift evaluations [default 1]")
    side.add_argument("--queue-batches", type=int, help="batches queued per model before dropping [default 256]")
    side.add_argument(
        "--no-shadow", dest="shadow", action="store_false", default=None, help="do not run shadow versions"
    )
    side.add_argument("--grace-period-s", type=float, help="time open streams get at shutdown [default 1]")
    add_security_flags(side, "DRIFTSERVE_SIDECAR_")
    side.add_argument(
        "--state-dir",
        help="the server's rollout state directory, shown on the dashboard "
        "[DRIFTSERVE_SIDECAR_STATE_DIR, default <model-repository>/.driftserve/rollouts]",
    )
    side.set_defaults(func=_cmd_sidecar)

    drift = sub.add_parser("drift", help="drift tools: build a reference profile, print a live report")
    drift_sub = drift.add_subparsers(dest="drift_command", required=True)
    prof = drift_sub.add_parser("profile", help="profile training data into a reference profile (JSON)")
    prof.add_argument("--data", required=True, help="training rows: .csv (header = names), .npz (X, feature_names)")
    prof.add_argument("--out", required=True, help="profile file to write")
    prof.add_argument("--categorical", nargs="*", default=[], help="features to profile as categorical")
    prof.add_argument("--bins", type=int, default=1000, help="fine quantile bins per numeric feature [default 1000]")
    prof.add_argument("--outputs-from-model", type=Path, help="model.onnx whose outputs on the data are profiled too")
    prof.set_defaults(func=_cmd_profile)
    rep = drift_sub.add_parser("report", help="print the sidecar's drift report as a table")
    rep.add_argument("--address", default=DEFAULT_LISTEN, help=f"sidecar gRPC address [default {DEFAULT_LISTEN}]")
    rep.add_argument("--model", help="model name [default: every monitored model]")
    rep.add_argument("--window", choices=("sliding", "cumulative"), help="one window [default both]")
    rep.add_argument("--only-flagged", action="store_true", help="show only features in warn or alert")
    rep.add_argument("--timeout-s", type=float, default=DEFAULT_REPORT_TIMEOUT_S, help="RPC timeout [default 10]")
    add_client_security_flags(rep)
    rep.set_defaults(func=_cmd_report)
    register_fleet(drift_sub)
