"""Talking to the server outside the measured window: target checks, readiness, input metadata
and the ModelStatistics breakdown read before and after a run."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import asdict, dataclass
from typing import Any

import grpc

from driftserve.api import grpc_service_pb2, grpc_service_pb2_grpc
from driftserve.bench.payload import TensorSpec
from driftserve.core.client import ClientSecurity

logger = logging.getLogger(__name__)

_LOOPBACK_NAMES = {"localhost", "ip6-localhost"}
PLAINTEXT = ClientSecurity()


class TargetError(ValueError):
    """A target that is malformed, not allowed, or not reachable; exit code 2."""


def check_target(target: str, allow_remote: bool = False) -> str:
    """Validate `host:port`; only loopback hosts unless `allow_remote`. Returns the target."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TargetError(f"bad target {target!r}: expected HOST:PORT, e.g. 127.0.0.1:8001")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if allow_remote:
        return target
    if bare.lower() in _LOOPBACK_NAMES:
        return target
    try:
        if ipaddress.ip_address(bare).is_loopback:
            return target
    except ValueError:
        pass
    raise TargetError(
        f"target host {host!r} is not a loopback address; this tool measures local servers "
        "(pass --allow-remote to measure a remote one on purpose)"
    )


def wait_connected(target: str, timeout_s: float, security: ClientSecurity = PLAINTEXT) -> None:
    """Block until a channel to `target` is ready, or raise TargetError."""
    with security.channel(target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            hint = "" if security.tls else " (if it serves TLS, pass --tls-ca)"
            raise TargetError(f"cannot connect to {target} within {timeout_s:g} s{hint}") from None


def fetch_input_specs(
    target: str, model: str, version: str, timeout_s: float, security: ClientSecurity = PLAINTEXT
) -> list[TensorSpec]:
    """The model's inputs from V2 ModelMetadata; TargetError when the server cannot tell."""
    with security.channel(target) as channel:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            meta = stub.ModelMetadata(
                grpc_service_pb2.ModelMetadataRequest(name=model, version=version),
                timeout=timeout_s,
                metadata=security.metadata,
            )
        except grpc.RpcError as exc:
            raise TargetError(
                f"ModelMetadata for model {model!r} on {target} failed: "
                f"{exc.code().name}: {exc.details()} (give --shape and --datatype instead)"
            ) from None
    return [TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in meta.inputs]


@dataclass
class ServerBreakdown:
    """Server-side time per request over a run (µs), from ModelStatistics deltas."""

    requests: int
    executions: int
    queue_us: float
    compute_input_us: float
    compute_infer_us: float
    compute_output_us: float
    avg_batch_size: float

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 2) if isinstance(v, float) else v for k, v in asdict(self).items()}


def fetch_statistics(
    target: str, model: str, version: str, timeout_s: float, security: ClientSecurity = PLAINTEXT
) -> grpc_service_pb2.ModelStatistics | None:
    """The model's aggregated statistics (all versions summed), or None if unsupported."""
    with security.channel(target) as channel:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            reply = stub.ModelStatistics(
                grpc_service_pb2.ModelStatisticsRequest(name=model, version=version),
                timeout=timeout_s,
                metadata=security.metadata,
            )
        except grpc.RpcError as exc:
            logger.debug("no ModelStatistics from %s: %s", target, exc.code().name)
            return None
    total = grpc_service_pb2.ModelStatistics(name=model)
    for stats in reply.model_stats:
        if stats.name != model:
            continue
        total.inference_count += stats.inference_count
        total.execution_count += stats.execution_count
        for part in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
            src = getattr(stats.inference_stats, part)
            dst = getattr(total.inference_stats, part)
            dst.count += src.count
            dst.ns += src.ns
    return total


def breakdown(
    before: grpc_service_pb2.ModelStatistics | None,
    after: grpc_service_pb2.ModelStatistics | None,
) -> ServerBreakdown | None:
    """Per-request averages of the server's own phases over the run, or None without data."""
    if before is None or after is None:
        return None
    b, a = before.inference_stats, after.inference_stats
    requests = a.success.count - b.success.count
    if requests <= 0:
        return None

    def per_request(part: str) -> float:
        return (getattr(a, part).ns - getattr(b, part).ns) / requests / 1_000.0

    executions = after.execution_count - before.execution_count
    inferences = after.inference_count - before.inference_count
    return ServerBreakdown(
        requests=requests,
        executions=executions,
        queue_us=per_request("queue"),
        compute_input_us=per_request("compute_input"),
        compute_infer_us=per_request("compute_infer"),
        compute_output_us=per_request("compute_output"),
        avg_batch_size=inferences / executions if executions > 0 else float("nan"),
    )
