"""A rollout's shadow stage in the real drift sidecar: the server tags mirrored batches with the
candidate, the sidecar runs it beside the primary, and the stage is judged on its report."""

from __future__ import annotations

from pathlib import Path

import grpc

from driftserve.api import driftserve_pb2 as dpb
from driftserve.api import driftserve_pb2_grpc
from tests.server.rollout_support import BASE_B, BASE_W, linear_model, make_model, write_version
from tests.server.support import InProcessServer, wait_until
from tests.server.test_rollouts_e2e import Clients
from tests.sidecar.support import InProcessSidecar

ROLLOUT = (
    "{shadow: {requests: 100, duration_s: 1.5}, steps: [50, 100], step_duration_s: 0.3, analysis_interval_s: 0.2, "
    "min_samples: 50, thresholds: {max_p99_ratio: 50, min_agreement: 0.9, max_output_psi: 5.0}}"
)


def _status(address: str) -> dpb.RolloutStatus:
    with grpc.insecure_channel(address) as channel:
        return driftserve_pb2_grpc.ModelsStub(channel).Status(dpb.ModelRef(model="m"), timeout=30)


def _shadow(sidecar: InProcessSidecar) -> dpb.ShadowReport:
    return sidecar.report("m").shadow


def test_shadow_stage_runs_in_the_sidecar_then_the_canary_proceeds(tmp_path: Path) -> None:
    x = make_model(tmp_path / "m", ROLLOUT)
    sidecar = InProcessSidecar(tmp_path)
    try:
        with (
            InProcessServer(
                tmp_path, load_models=["m"], poll_interval_s=0.2, mirror_address=sidecar.running.address
            ) as server,
            Clients(server.address, x) as clients,
        ):
            wait_until(lambda: clients.count() > 100, 60)
            write_version(tmp_path / "m", 2, linear_model(BASE_W * 1.2, BASE_B))
            stages: list[dpb.RolloutStatus] = []
            reports: list[dpb.ShadowReport] = []

            def done() -> bool:
                stages.append(_status(server.address))
                if stages[-1].stage == "shadow":
                    report = _shadow(sidecar)
                    if report.shadow_version == "2":
                        reports.append(report)
                return stages[-1].stage in ("primary", "rolled_back", "failed")

            wait_until(done, 120, interval_s=0.05)
            assert stages[-1].stage == "primary", stages[-1]
            in_shadow = [s for s in stages if s.stage == "shadow" and s.checks]
            assert in_shadow, "the shadow stage was never judged"
            agreement = {c.name: c for c in in_shadow[-1].checks}["agreement"]
            assert agreement.value == 1.0 and agreement.samples >= 50
            assert reports, "the sidecar never reported on the candidate"
            report = reports[-1]
            assert report.primary_version == "1" and report.rows > 0
            assert report.primary_inference_p50_s > 0 and report.shadow_latency_p50_s > 0
            assert report.primary_latency_p50_s > 0
            # The stage is over: the sidecar stopped running the candidate.
            wait_until(lambda: not sidecar.report("m").HasField("shadow"), 30)
            # The dashboard's rollout panel reads the server's persisted state.
            status, page = sidecar.http("/dashboard")
            assert status == 200 and '<section id="rollouts">' in page
            assert ">primary</span>" in page and "agreement" in page
        assert clients.failures == []
    finally:
        sidecar.close()
