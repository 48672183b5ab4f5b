"""Overload refused with RESOURCE_EXHAUSTED, never CANCELLED: by the completion-queue front end
(the default), counted and with a retry hint, and by gRPC's core with ``--shed-in-grpc-core`` on
grpc.aio."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import grpc
import numpy as np

from driftserve.api import grpc_service_pb2_grpc as pb_grpc
from driftserve.server import grpc_core_shedding
from tests.server.support import ServerProcess, v2_request


def test_the_experiment_is_added_to_those_already_asked_for() -> None:
    assert not grpc_core_shedding.enabled({})
    assert grpc_core_shedding.environment_with_shedding({"PATH": "/bin"}) == {
        "PATH": "/bin",
        "GRPC_EXPERIMENTS": "ph2_server",
    }
    env = grpc_core_shedding.environment_with_shedding({"GRPC_EXPERIMENTS": "tcp_rcv_lowat"})
    assert env["GRPC_EXPERIMENTS"] == "tcp_rcv_lowat,ph2_server"
    assert grpc_core_shedding.enabled(env)
    assert grpc_core_shedding.environment_with_shedding(env) == env  # once only


async def _flood(address: str, calls: int) -> Counter[tuple[str, str, str]]:
    """``calls`` concurrent ModelInfer calls on one channel; their status codes, details and
    retry-pushback trailers."""
    x = np.random.default_rng(0).normal(size=(1, 30)).astype(np.float32)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        async def one() -> tuple[str, str, str]:
            try:
                await stub.ModelInfer(v2_request("breast_cancer_lr", x), timeout=60)
                return ("OK", "", "")
            except grpc.aio.AioRpcError as exc:
                pushback = dict(exc.trailing_metadata() or ()).get("grpc-retry-pushback-ms", "")
                return (exc.code().name, exc.details() or "", str(pushback))

        return Counter(await asyncio.gather(*(one() for _ in range(calls))))


def test_a_flood_beyond_the_backlog_is_refused_resource_exhausted(example_repository: Path) -> None:
    with ServerProcess(
        example_repository,
        "--grpc-frontend",
        "aio",
        "--shed-in-grpc-core",
        "--max-pending-calls",
        "1",
        "--load-model",
        "breast_cancer_lr",
    ) as server:
        outcomes = asyncio.run(_flood(server.address, 400))
        # The server re-executed itself with the experiment on and says so.
        assert any("refuses calls beyond 1 pending with RESOURCE_EXHAUSTED" in line for line in server.lines)
        codes = Counter(code for code, _, _ in outcomes.elements())
        assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, outcomes
        assert codes["OK"] > 0 and codes["RESOURCE_EXHAUSTED"] > 0, outcomes
        assert {detail for code, detail, _ in outcomes if code == "RESOURCE_EXHAUSTED"} <= {
            "Too many pending requests for this server"
        }
        # The server still serves normally afterwards.
        assert asyncio.run(_flood(server.address, 1)) == Counter({("OK", "", ""): 1})


def test_the_front_end_refuses_its_backlog_counted_and_with_a_retry_hint(example_repository: Path) -> None:
    with ServerProcess(example_repository, "--max-pending-calls", "1", "--load-model", "breast_cancer_lr") as server:
        outcomes = asyncio.run(_flood(server.address, 400))
        codes = Counter(code for code, _, _ in outcomes.elements())
        assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, outcomes
        assert codes["OK"] > 0 and codes["RESOURCE_EXHAUSTED"] > 0, outcomes
        for code, detail, pushback in outcomes:
            if code == "RESOURCE_EXHAUSTED":
                assert "--max-pending-calls" in detail and int(pushback) > 0, (detail, pushback)
        # Every refusal is counted where an operator looks.
        assert server.metric("driftserve_server_backlog_refusals_total") == codes["RESOURCE_EXHAUSTED"]
        assert asyncio.run(_flood(server.address, 1)) == Counter({("OK", "", ""): 1})
