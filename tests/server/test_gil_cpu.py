"""``driftserve serve --gil-cpu``: the event loop, the gRPC poller and the reply senders share one
CPU; every other thread (gRPC core's, the batch workers, model loading, also those started after
the placement) keeps the whole mask, and the server serves as before."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import numpy as np
import pytest

from driftserve.api import grpc_service_pb2 as pb
from driftserve.api import grpc_service_pb2_grpc
from tests.server.support import ServerProcess, copy_model, thread_cpus, v2_request

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs Linux and 2 CPUs"
)
GIL_THREADS = ("grpc-cq-poller", "grpc-cq-sender")


def _infer(stub: grpc_service_pb2_grpc.GRPCInferenceServiceStub, model: str) -> None:
    for rows in (1, 3):
        reply = stub.ModelInfer(v2_request(model, np.zeros((rows, 30), np.float32)))
        assert reply.outputs[0].shape[0] == rows


def test_the_loop_poller_and_senders_share_the_last_cpu_and_nothing_else_does(
    example_repository: Path, tmp_path: Path
) -> None:
    copy_model(example_repository, tmp_path, "breast_cancer_lr")
    copy_model(example_repository, tmp_path, "breast_cancer_mlp")
    whole = set(os.sched_getaffinity(0))
    gil = {max(whole)}
    with ServerProcess(tmp_path, "--gil-cpu", "on", "--load-model", "breast_cancer_lr") as server:
        with grpc.insecure_channel(server.address) as channel:
            stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
            _infer(stub, "breast_cancer_lr")
            # Loaded now, from the placed loop: its load and batch threads must not inherit the CPU.
            stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="breast_cancer_mlp"))
            _infer(stub, "breast_cancer_mlp")
            threads = thread_cpus(server.process.pid)
        assert server.terminate() == 0
    placed = {tid for tid, (name, _) in threads.items() if tid == server.process.pid or name in GIL_THREADS}
    assert len(placed) == 1 + 1 + 2, f"the loop, the poller and two senders: {threads}"
    assert all(threads[tid][1] == gil for tid in placed)
    others = {tid: entry for tid, entry in threads.items() if tid not in placed}
    assert sum(name.startswith("batch-") for name, _ in others.values()) >= 2
    assert any(name == "event_engine" for name, _ in others.values())
    assert all(cpus == whole for _, cpus in others.values()), others
    log = "\n".join(server.lines)
    assert f"GIL threads (event loop, gRPC poller, reply senders) on CPU {max(whole)}" in log


def test_off_leaves_every_thread_on_every_cpu(example_repository: Path, tmp_path: Path) -> None:
    copy_model(example_repository, tmp_path, "breast_cancer_lr")
    whole = set(os.sched_getaffinity(0))
    with ServerProcess(tmp_path, "--gil-cpu", "off") as server:
        with grpc.insecure_channel(server.address) as channel:
            _infer(grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel), "breast_cancer_lr")
        threads = thread_cpus(server.process.pid)
        assert server.terminate() == 0
    assert all(cpus == whole for _, cpus in threads.values())
    assert "(--gil-cpu off)" in "\n".join(server.lines)
