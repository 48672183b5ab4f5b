"""``driftserve models list | status | load | promote | rollback | unload``: the Models service's CLI.

Each subcommand is one gRPC call to a running server and prints a readable table or line; a
failed call prints its status and message on stderr and exits 1 (2 when the server is
unreachable). ``status`` also reads ModelStatistics, for what the SLO batch controller of each
version decided and measured (skipped where the caller's token may not read statistics).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

import grpc

from driftserve.api import driftserve_pb2 as pb
from driftserve.api import driftserve_pb2_grpc as pb_grpc
from driftserve.api import grpc_service_pb2 as v2
from driftserve.api import grpc_service_pb2_grpc as v2_grpc
from driftserve.core.client import ClientSecurity, plaintext_hint
from driftserve.core.security_flags import add_client_security_flags
from driftserve.core.startup import EXIT_USAGE, StartupError

DEFAULT_ADDRESS = "localhost:8001"
DEFAULT_TIMEOUT_S = 600.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``models`` and its subcommands to the top-level parser."""
    models = sub.add_parser("models", help="list, load, promote, roll back and unload model versions")
    models.add_argument("--address", default=DEFAULT_ADDRESS, help=f"server gRPC address [default {DEFAULT_ADDRESS}]")
    models.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S, help="RPC deadline [default 600]")
    add_client_security_flags(models)
    actions = models.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every model version with its state, role and traffic weight")
    for name, text in (
        ("status", "the model's rollout: stage, step, weight, analysis"),
        ("promote", "promote the rollout's candidate now"),
        ("rollback", "roll back the running rollout, or the last promotion"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("model")
    for name, text in (
        ("load", "load a model, or roll out its newest (or --version) version through the gate"),
        ("unload", "unload a model, or one version that is not the primary"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("model")
        action.add_argument("--version", default="", help="a version number")
    models.set_defaults(func=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    """Run one ``models`` action against the server at ``--address``."""
    try:
        security = ClientSecurity.from_args(args)
    except StartupError as exc:
        print(f"driftserve models {args.action}: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    metadata = security.metadata
    with security.channel(args.address) as channel:
        stub = pb_grpc.ModelsStub(channel)
        try:
            if args.action == "list":
                print(render_list(stub.List(pb.ModelsListRequest(), timeout=args.timeout_s, metadata=metadata)))
            elif args.action == "status":
                print(
                    render_status(stub.Status(pb.ModelRef(model=args.model), timeout=args.timeout_s, metadata=metadata))
                )
                batching = batch_control_lines(channel, args.model, args.timeout_s, metadata)
                if batching:
                    print("\n".join(["", *batching]))
            else:
                call = {"load": stub.Load, "promote": stub.Promote, "rollback": stub.Rollback, "unload": stub.Unload}
                ref = pb.ModelRef(model=args.model, version=getattr(args, "version", ""))
                reply = call[args.action](ref, timeout=args.timeout_s, metadata=metadata)
                print(reply.message)
                if reply.status.stage:
                    print(render_status(reply.status))
        except grpc.RpcError as exc:
            code = exc.code()
            hint = plaintext_hint(exc, security)
            print(f"driftserve models {args.action}: {code.name}: {exc.details()}{hint}", file=sys.stderr, flush=True)
            return 2 if code == grpc.StatusCode.UNAVAILABLE else 1
    return 0


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def render_list(reply: pb.ModelsListResponse) -> str:
    rows = [
        [
            v.model,
            v.version or "-",
            v.state or "-",
            v.role or "-",
            f"{v.weight * 100:.0f}%" if v.role else "-",
            v.reason,
        ]
        for v in reply.versions
    ]
    out = table(["MODEL", "VERSION", "STATE", "ROLE", "WEIGHT", "REASON"], rows)
    if reply.rollouts:
        stages = [[r.model, r.stage, r.candidate, r.primary, _step(r), r.reason] for r in reply.rollouts if r.stage]
        out += "\n\n" + table(["MODEL", "ROLLOUT", "CANDIDATE", "PRIMARY", "STEP", "REASON"], stages)
    return out


def render_status(status: pb.RolloutStatus) -> str:
    if not status.stage:
        return f"{status.model}: no rollout yet"
    lines = [
        f"model      {status.model}",
        f"stage      {status.stage}" + (f" (step {_step(status)})" if status.step >= 0 else ""),
        f"candidate  {status.candidate}    primary {status.primary}"
        + (f"    previous {status.previous}" if status.previous else ""),
    ]
    if status.gate_metric:
        lines.append(f"gate       {status.gate_metric} {_fmt(status.gate_score)}")
    if status.reason:
        lines.append(f"reason     {status.reason}")
    if status.checks:
        rows = [
            [
                c.name,
                _fmt(c.value),
                _fmt(c.limit),
                str(c.samples),
                ("ok" if c.ok else "BREACH") if c.judged else "waiting",
            ]
            for c in status.checks
        ]
        lines += ["", table(["CHECK", "VALUE", "LIMIT", "SAMPLES", "RESULT"], rows)]
    if status.rejected:
        lines += ["", "rejected versions: " + "; ".join(f"{v}: {r}" for v, r in sorted(status.rejected.items()))]
    return "\n".join(lines)


def batch_control_lines(
    channel: grpc.Channel, model: str, timeout_s: float, metadata: Sequence[tuple[str, str]] | None
) -> list[str]:
    """One line per version whose batches an SLO controller sizes; none where statistics are not readable."""
    stub = v2_grpc.GRPCInferenceServiceStub(channel)
    try:
        reply = stub.ModelStatistics(v2.ModelStatisticsRequest(name=model), timeout=timeout_s, metadata=metadata)
    except grpc.RpcError:
        return []
    return [render_batch_control(s.version, s.batch_control) for s in reply.model_stats if s.HasField("batch_control")]


def render_batch_control(version: str, c: v2.BatchControlStatistics) -> str:
    p99 = f"{c.measured_p99_ns / 1e6:.2f} ms" if c.measured_p99_ns else "not yet measured"
    return (
        f"batching   v{version}: objective {c.objective_ns / 1e6:g} ms, delay {c.queue_delay_ns / 1e6:.2f} ms, "
        f"target {c.target_batch_rows} rows, limit {c.batch_limit_rows}, "
        f"cost {c.cost_fixed_ns / 1e6:.3f} ms + {c.cost_per_row_ns / 1e6:.4f} ms/row, "
        f"arrivals {c.arrival_rows_per_s:,.0f} rows/s, p99 {p99}, budget {c.budget_fraction:.2f}, "
        f"CPU pressure {c.cpu_pressure:.2f}, event loop busy {c.loop_busy:.2f}, probes {c.probes}"
    )


def _step(status: pb.RolloutStatus) -> str:
    return f"{status.step + 1} ({status.weight * 100:g}%)" if status.step >= 0 else "-"


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4g}"
