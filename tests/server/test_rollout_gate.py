"""The gate: bad candidates leave the current version serving, with the reason everywhere."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest

from driftserve.api import driftserve_pb2 as dpb
from driftserve.api import driftserve_pb2_grpc
from driftserve.api import grpc_service_pb2 as v2pb
from driftserve.core.tensors import decode_raw
from tests.server.rollout_support import BASE_B, BASE_W, linear_model, make_model, write_version
from tests.server.support import InProcessServer, v2_request, wait_until

FAST = "{steps: [100], step_duration_s: 0, analysis_interval_s: 0.1}"


def _predict(server: InProcessServer, x: np.ndarray) -> dpb.PredictResponse:
    tensor = dpb.Tensor(name="input", datatype="FP32", shape=x.shape, data=x.tobytes())
    return server.native().Predict(dpb.PredictRequest(model="m", inputs=[tensor]), timeout=30)


def _load(server: InProcessServer, version: str) -> grpc.RpcError:
    stub = driftserve_pb2_grpc.ModelsStub(server.channel())
    with pytest.raises(grpc.RpcError) as caught:
        stub.Load(dpb.ModelRef(model="m", version=version), timeout=120)
    return caught.value


def test_bad_candidates_leave_the_current_version_serving(tmp_path: Path) -> None:
    x = make_model(tmp_path / "m", FAST)
    good = linear_model(BASE_W, BASE_B)
    with InProcessServer(tmp_path, load_models=["m"]) as server:
        assert _predict(server, x[:1]).version == "1"
        write_version(tmp_path / "m", 2, linear_model(-BASE_W, BASE_B))  # flips every decision: accuracy ~0
        write_version(tmp_path / "m", 3, b"\x08\x07 not an onnx graph")
        write_version(tmp_path / "m", 4, good[: len(good) // 2])  # half-written in place
        (tmp_path / "m" / "5").mkdir()  # a version directory whose model.onnx is not there yet
        write_version(tmp_path / "m", 6, linear_model(np.ones((5, 2), np.float32), BASE_B, n_features=5))
        cases = {
            "2": (grpc.StatusCode.FAILED_PRECONDITION, "below min 0.8"),
            "3": (grpc.StatusCode.FAILED_PRECONDITION, "cannot be loaded"),
            "4": (grpc.StatusCode.FAILED_PRECONDITION, "cannot be loaded"),
            "5": (grpc.StatusCode.NOT_FOUND, "no complete version 5"),
            "6": (grpc.StatusCode.FAILED_PRECONDITION, "incompatible with version 1"),
        }
        for version, (code, text) in cases.items():
            error = _load(server, version)
            assert error.code() == code, (version, error.details())
            assert text in (error.details() or ""), (version, error.details())
            reply = _predict(server, x[:3])
            assert reply.version == "1"
            probabilities = decode_raw("FP32", [3, 2], reply.outputs[1].data, "probabilities")
            assert probabilities.shape == (3, 2)
        status = driftserve_pb2_grpc.ModelsStub(server.channel()).Status(dpb.ModelRef(model="m"), timeout=30)
        assert status.stage == "failed" and "incompatible" in status.reason
        assert set(status.rejected) == {"2", "3", "4", "6"}
        assert "below min" in status.rejected["2"]
        assert server.metric("driftserve_rollout_gate_total", model="m", result="failed") == 4
        assert server.metric("driftserve_rollout_stage", model="m", stage="failed") == 1
        # The V2 repository RPC goes through the same gate: the newest version (6) is refused.
        with pytest.raises(grpc.RpcError) as caught:
            server.v2().RepositoryModelLoad(v2pb.RepositoryModelLoadRequest(model_name="m"), timeout=120)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "incompatible" in (caught.value.details() or "")
        reply = server.v2().ModelInfer(v2_request("m", x[:1]), timeout=30)
        assert reply.model_version == "1"
        # So does the REST load endpoint: 400 with the gate's reason, not the candidate served at once.
        load = urllib.request.Request(f"{server.http_url}/v2/repository/models/m/load", data=b"", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(load, timeout=120)
        assert refused.value.code == 400
        assert "incompatible" in json.loads(refused.value.read())["error"]
        refused.value.close()
        assert server.v2().ModelInfer(v2_request("m", x[:1]), timeout=30).model_version == "1"


def test_a_good_candidate_passes_and_is_promoted(tmp_path: Path) -> None:
    x = make_model(tmp_path / "m", FAST)
    with InProcessServer(tmp_path, load_models=["m"]) as server:
        write_version(tmp_path / "m", 2, linear_model(BASE_W * 1.1, BASE_B))
        stub = driftserve_pb2_grpc.ModelsStub(server.channel())
        reply = stub.Load(dpb.ModelRef(model="m"), timeout=120)
        assert "version 2 passed the gate" in reply.message
        wait_until(lambda: stub.Status(dpb.ModelRef(model="m"), timeout=30).stage == "primary", 60)
        assert _predict(server, x[:1]).version == "2"
        status = stub.Status(dpb.ModelRef(model="m"), timeout=30)
        assert status.gate_metric == "accuracy" and status.gate_score > 0.9 and status.previous == "1"
        assert (tmp_path / ".driftserve" / "rollouts" / "m.json").is_file()


def test_the_candidate_answers_nothing_before_its_canary_and_promote_skips_the_steps(tmp_path: Path) -> None:
    rollout = (
        "{shadow: {duration_s: 600}, steps: [50, 100], step_duration_s: 600, analysis_interval_s: 0.1, "
        "thresholds: {max_p99_ratio: 1000, min_agreement: 0.5, max_output_psi: 100}}"
    )
    x = make_model(tmp_path / "m", rollout)
    with InProcessServer(tmp_path, load_models=["m"]) as server:
        write_version(tmp_path / "m", 2, linear_model(BASE_W * 1.1, BASE_B))
        stub = driftserve_pb2_grpc.ModelsStub(server.channel())
        stub.Load(dpb.ModelRef(model="m"), timeout=120)
        wait_until(lambda: stub.Status(dpb.ModelRef(model="m"), timeout=30).stage == "shadow", 60)
        assert {_predict(server, x[i : i + 1]).version for i in range(100)} == {"1"}
        listed = {(v.version, v.role) for v in stub.List(dpb.ModelsListRequest(), timeout=30).versions}
        assert {("1", "primary"), ("2", "candidate")} <= listed
        reply = stub.Promote(dpb.ModelRef(model="m"), timeout=60)
        assert reply.status.stage == "primary" and reply.status.previous == "1"
        assert {_predict(server, x[i : i + 1]).version for i in range(100)} == {"2"}
        # Version 1 stays loaded for an instant rollback.
        assert _predict_pinned(server, x[:1], "1").version == "1"
        stub.Rollback(dpb.ModelRef(model="m"), timeout=60)
        assert {_predict(server, x[i : i + 1]).version for i in range(100)} == {"1"}


def _predict_pinned(server: InProcessServer, x: np.ndarray, version: str) -> dpb.PredictResponse:
    tensor = dpb.Tensor(name="input", datatype="FP32", shape=x.shape, data=x.tobytes())
    return server.native().Predict(dpb.PredictRequest(model="m", version=version, inputs=[tensor]), timeout=30)
