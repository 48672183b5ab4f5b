"""``--workers 2``: two server processes on one port, aggregated metrics, clean shutdown of both."""

from __future__ import annotations

import os
import signal
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from driftserve.api import driftserve_pb2, driftserve_pb2_grpc, grpc_service_pb2, grpc_service_pb2_grpc
from driftserve.core.ports import free_port
from driftserve.core.processes import start_child
from tests.server.support import InProcessServer, ServerProcess, copy_model, thread_cpus, v2_request, wait_until


def _alive(pid: int) -> bool:
    """Running (an exited child nobody has reaped yet, a zombie, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_two_workers_serve_from_two_pids_and_stop_together(example_repository: Path, tmp_path: Path) -> None:
    copy_model(example_repository, tmp_path, "breast_cancer_lr")
    with ServerProcess(tmp_path, "--workers", "2") as server:
        pids = [int(p) for p in server.announced["pids"].split(",")]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        x = np.zeros((1, 30), np.float32)

        def spread() -> bool:
            # New channels are new connections; the kernel spreads them across the listeners.
            for _ in range(8):
                with grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
                    grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                        v2_request("breast_cancer_lr", x)
                    )
            per_pid = {
                dict(labels).get("pid"): value
                for (name, labels), value in server.metrics().items()
                if name == "driftserve_server_worker_requests"
            }
            return len([v for v in per_pid.values() if v > 0]) == 2 and set(per_pid) == {str(p) for p in pids}

        wait_until(spread, timeout_s=60, interval_s=0)
        ok = server.metric("driftserve_server_requests_total", model="breast_cancer_lr", code="OK")
        assert ok >= 8, "the aggregated counter sums both workers"
        assert server.terminate() == 0
        wait_until(lambda: not any(_alive(p) for p in pids), timeout_s=30)


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to pin 2 workers"
)
def test_pinned_workers_run_every_thread_on_their_own_cpus(example_repository: Path, tmp_path: Path) -> None:
    copy_model(example_repository, tmp_path, "breast_cancer_lr")
    allowed = set(os.sched_getaffinity(0))
    with ServerProcess(tmp_path, "--workers", "2", "--pin-workers") as server:
        pids = [int(p) for p in server.announced["pids"].split(",")]
        shares = []
        for pid in pids:
            masks = [cpus for _, cpus in thread_cpus(pid).values()]
            share = set().union(*masks)
            # Every thread, not only the first, within the worker's share (--gil-cpu may put the
            # loop, poller and senders on one CPU of it when the share has several).
            assert len(masks) > 3 and sum(mask == share for mask in masks) > 3
            shares.append(share)
        assert not shares[0] & shares[1] and shares[0] | shares[1] == allowed
        with grpc.insecure_channel(server.address) as channel:
            reply = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                v2_request("breast_cancer_lr", np.zeros((1, 30), np.float32))
            )
        assert reply.raw_output_contents
        assert server.terminate() == 0


def test_pinning_more_workers_than_cpus_is_refused_before_any_starts(tmp_path: Path) -> None:
    workers = len(os.sched_getaffinity(0)) + 1 if hasattr(os, "sched_getaffinity") else 2
    child = start_child(
        "serve",
        ["serve", "--model-repository", str(tmp_path), "--workers", str(workers), "--pin-workers", "--grpc-port", "0"],
        output="keep",
    )
    assert child.process.wait(timeout=60) != 0
    assert "--pin-workers needs a CPU of its own for each worker" in child.output()


def test_workers_exit_when_their_supervisor_is_killed(example_repository: Path, tmp_path: Path) -> None:
    copy_model(example_repository, tmp_path, "breast_cancer_lr")
    with ServerProcess(tmp_path, "--workers", "2") as server:
        pids = [int(p) for p in server.announced["pids"].split(",")]
        assert all(_alive(p) for p in pids)
        server.process.kill()  # SIGKILL: the supervisor cannot stop its workers itself
        server.process.wait(timeout=10)
        wait_until(lambda: not any(_alive(p) for p in pids), timeout_s=30)


def test_workers_with_nothing_ready_stay_up_not_ready_and_stop_on_sigterm(
    example_repository: Path, tmp_path: Path
) -> None:
    # The only model's config is broken: every worker starts, and none becomes ready.
    copy_model(example_repository, tmp_path, "breast_cancer_lr", config="max_batch_size: 8\nbatchin: {}\n")
    port = free_port()
    argv = ["serve", "--model-repository", str(tmp_path), "--host", "127.0.0.1", "--grpc-port", str(port)]
    supervisor = start_child("supervisor", [*argv, "--metrics-port", "-1", "--workers", "2"], output="keep")
    try:
        wait_until(lambda: sum("not ready: none of 1 model(s)" in line for line in supervisor.lines) == 2, 60)
        assert supervisor.process.poll() is None and not supervisor.ready.is_set()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert supervisor.terminate(30) == 0
    finally:
        supervisor.kill()


def test_sighup_to_the_supervisor_reloads_the_tokens_of_every_worker(example_repository: Path, tmp_path: Path) -> None:
    copy_model(example_repository, tmp_path / "repo", "breast_cancer_lr")
    tokens = tmp_path / "tokens"
    tokens.write_text("first-token-0123456789abcdef infer\n")
    tokens.chmod(0o600)
    with ServerProcess(tmp_path / "repo", "--workers", "2", "--auth-tokens-file", str(tokens)) as server:
        pids = [int(p) for p in server.announced["pids"].split(",")]
        tokens.write_text("rotated-token-0123456789abcdef infer\n")
        os.kill(server.process.pid, signal.SIGHUP)
        # Both workers log the reload (their output is the supervisor's), and keep serving.
        wait_until(lambda: sum("SIGHUP: reloaded 1 bearer token(s)" in line for line in server.lines) == 2)
        assert all(_alive(p) for p in pids) and server.process.poll() is None
        x = np.zeros((1, 30), np.float32)
        for _ in range(8):  # new connections, spread across both workers by the kernel
            with grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
                stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
                metadata = (("authorization", "Bearer rotated-token-0123456789abcdef"),)
                stub.ModelInfer(v2_request("breast_cancer_lr", x), metadata=metadata, timeout=30)
        assert server.terminate() == 0


def test_a_worker_reports_ready_only_once_its_fleet_is(example_repository: Path, tmp_path: Path) -> None:
    # A worker of --workers is started like this one: its parent creates the file once every worker
    # has printed its ready line. Until then the worker serves but tells probes it is not ready.
    copy_model(example_repository, tmp_path / "repo", "breast_cancer_lr")
    flag = tmp_path / "fleet-ready"
    with ServerProcess(tmp_path / "repo", env={"DRIFTSERVE_FLEET_READY_FILE": str(flag)}) as server:
        with grpc.insecure_channel(server.address) as channel:
            v2 = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            v2.ModelInfer(v2_request("breast_cancer_lr", np.zeros((1, 30), np.float32)), timeout=30)
            assert not v2.ServerReady(grpc_service_pb2.ServerReadyRequest(), timeout=10).ready
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            with urllib.request.urlopen(f"{server.http_url}/v2/health/live", timeout=10) as live:
                assert live.status == 200
            with pytest.raises(urllib.error.HTTPError) as not_ready:
                urllib.request.urlopen(f"{server.http_url}/v2/health/ready", timeout=10)
            assert not_ready.value.code == 503
            not_ready.value.close()
            flag.touch()
            wait_until(lambda: v2.ServerReady(grpc_service_pb2.ServerReadyRequest(), timeout=10).ready, 30)
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.SERVING
            with urllib.request.urlopen(f"{server.http_url}/v2/health/ready", timeout=10) as ready:
                assert ready.status == 200
        assert server.terminate() == 0


def test_the_parent_lets_its_workers_report_ready_when_all_are(example_repository: Path, tmp_path: Path) -> None:
    copy_model(example_repository, tmp_path, "breast_cancer_lr")
    with ServerProcess(tmp_path, "--workers", "2") as server:
        # Each new connection may land on either worker: every one of them says ready.
        for _ in range(6):
            with grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
                ready = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel).ServerReady(
                    grpc_service_pb2.ServerReadyRequest(), timeout=10
                )
                assert ready.ready
                # Control calls would change only this connection's worker: refused, saying why.
                with pytest.raises(grpc.RpcError) as refused:
                    grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel).RepositoryModelLoad(
                        grpc_service_pb2.RepositoryModelLoadRequest(model_name="breast_cancer_lr"), timeout=30
                    )
                assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert "--workers" in (refused.value.details() or "")
        assert server.terminate() == 0


def test_a_worker_refuses_every_control_call_and_serves_on(example_repository: Path, tmp_path: Path) -> None:
    copy_model(example_repository, tmp_path / "repo", "breast_cancer_lr")
    flag = tmp_path / "fleet-ready"
    flag.touch()  # its siblings are ready too
    with InProcessServer(tmp_path / "repo", fleet_ready_file=flag) as server, server.channel() as channel:
        v2 = server.v2(channel)
        models = driftserve_pb2_grpc.ModelsStub(channel)
        ref = driftserve_pb2.ModelRef(model="breast_cancer_lr")
        calls = {
            "RepositoryModelLoad": lambda: v2.RepositoryModelLoad(
                grpc_service_pb2.RepositoryModelLoadRequest(model_name="breast_cancer_lr"), timeout=30
            ),
            "RepositoryModelUnload": lambda: v2.RepositoryModelUnload(
                grpc_service_pb2.RepositoryModelUnloadRequest(model_name="breast_cancer_lr"), timeout=30
            ),
            "Models.Load": lambda: models.Load(ref, timeout=30),
            "Models.Unload": lambda: models.Unload(ref, timeout=30),
            "Models.Promote": lambda: models.Promote(ref, timeout=30),
            "Models.Rollback": lambda: models.Rollback(ref, timeout=30),
        }
        for name, call in calls.items():
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, name
            assert "--workers" in (refused.value.details() or ""), name
        for action in ("load", "unload"):
            request = urllib.request.Request(
                f"{server.http_url}/v2/repository/models/breast_cancer_lr/{action}", data=b"", method="POST"
            )
            with pytest.raises(urllib.error.HTTPError) as http_refused:
                urllib.request.urlopen(request, timeout=30)
            assert http_refused.value.code == 400 and b"--workers" in http_refused.value.read()
            http_refused.value.close()
        # Nothing changed: the model serves, and reading its state is still allowed.
        reply = v2.ModelInfer(v2_request("breast_cancer_lr", np.zeros((1, 30), np.float32)), timeout=30)
        assert reply.model_name == "breast_cancer_lr"
        stats = v2.ModelStatistics(grpc_service_pb2.ModelStatisticsRequest(name="breast_cancer_lr"), timeout=30)
        assert stats.model_stats
        assert models.Status(ref, timeout=30).model == "breast_cancer_lr"
