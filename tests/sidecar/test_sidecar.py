"""The sidecar end to end in-process: Mirror/Publish in, Monitor gRPC, JSON API, metrics, dashboard out."""

from __future__ import annotations

import json
import sys

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from driftserve.api import driftserve_pb2, driftserve_pb2_grpc
from tests.sidecar.support import (
    MODEL,
    InProcessSidecar,
    batches_from,
    build_repository,
    mirror_batch,
    reference_rows,
    tensor,
    training_data,
    wait_for,
)

SHIFTED = "mean_texture"
ROWS = 4096


def _inputs_by_status(report: driftserve_pb2.DriftReport, window: str = "sliding") -> dict[str, set[str]]:
    statuses: dict[str, set[str]] = {}
    for f in report.features:
        if f.kind == "input" and f.window == window:
            statuses.setdefault(f.status, set()).add(f.feature)
    return statuses


def test_reference_traffic_is_ok_everywhere(sidecar: InProcessSidecar, primary: ort.InferenceSession) -> None:
    summary = sidecar.publish(batches_from(reference_rows(np.random.default_rng(1), ROWS), primary))
    assert (summary.batches, summary.rows) == (ROWS // 256, ROWS)
    report = sidecar.report()
    _, _, names = training_data()
    assert report.rows_seen == ROWS
    assert {f.feature for f in report.features if f.kind == "input"} == set(names)
    assert {f.status for f in report.features} == {"ok"}, [
        (f.feature, f.window, list(f.reasons)) for f in report.features if f.status != "ok"
    ]
    assert all(f.window_rows == ROWS for f in report.features)
    for name in names:
        assert sidecar.sample("driftserve_drift_alert", model=MODEL, feature=name, window="sliding") == 0
    assert sidecar.sample("driftserve_sidecar_rows_total") == ROWS


def test_shifted_feature_alerts_on_that_feature_only(sidecar: InProcessSidecar, primary: ort.InferenceSession) -> None:
    x, _, names = training_data()
    rows = reference_rows(np.random.default_rng(2), ROWS)
    rows[:, names.index(SHIFTED)] += 0.5 * x[:, names.index(SHIFTED)].std()
    sidecar.publish(batches_from(rows, primary))
    report = sidecar.report()
    for window in ("sliding", "cumulative"):
        statuses = _inputs_by_status(report, window)
        assert statuses.get("alert") == {SHIFTED}, statuses
        assert not statuses.get("warn"), statuses
    alerted = next(f for f in report.features if f.feature == SHIFTED and f.window == "sliding")
    assert alerted.ks_statistic > 0.1 and alerted.ks_pvalue_corrected < 0.01 and alerted.reasons
    status, body = sidecar.http(f"/api/drift/{MODEL}?window=sliding")
    doc = json.loads(body)
    assert status == 200 and doc["status"] == "alert"
    assert {a["feature"] for a in doc["alerts"]} - {"label", "probabilities[0]", "probabilities[1]"} == {SHIFTED}
    assert {f["window"] for f in doc["features"]} == {"sliding"}
    metrics = dict(model=MODEL, window="sliding")
    assert sidecar.sample("driftserve_drift_alert", feature=SHIFTED, **metrics) == 2
    for name in names:
        if name != SHIFTED:
            assert sidecar.sample("driftserve_drift_alert", feature=name, **metrics) == 0, name
    assert sidecar.sample("driftserve_drift_ks_statistic", feature=SHIFTED, **metrics) == pytest.approx(
        alerted.ks_statistic
    )
    assert sidecar.sample("driftserve_drift_psi", feature=SHIFTED, **metrics) == pytest.approx(alerted.psi)
    assert sidecar.sample("driftserve_drift_window_rows", feature=SHIFTED, **metrics) == ROWS


def test_nan_heavy_feature_raises_missing_share_alert(sidecar: InProcessSidecar, primary: ort.InferenceSession) -> None:
    _, _, names = training_data()
    rows = reference_rows(np.random.default_rng(3), ROWS)
    column = names.index("worst_area")
    rows[::2, column] = np.nan  # half the rows lose the value
    sidecar.publish(batches_from(rows, primary))
    report = sidecar.report(window="sliding")
    assert _inputs_by_status(report).get("alert") == {"worst_area"}
    item = next(f for f in report.features if f.feature == "worst_area")
    assert item.missing_share == pytest.approx(0.5)
    assert any("missing share" in r for r in item.reasons)


def test_bad_batches_are_counted_and_never_break_the_stream(
    sidecar: InProcessSidecar, primary: ort.InferenceSession
) -> None:
    good = batches_from(reference_rows(np.random.default_rng(4), 512), primary)
    x = reference_rows(np.random.default_rng(5), 8)
    truncated = mirror_batch(x)
    truncated.inputs[0].data = truncated.inputs[0].data[:-4]
    narrow = mirror_batch(np.ascontiguousarray(x[:, :29]))
    wrong_rows = mirror_batch(x)
    wrong_rows.rows = 9
    text_input = mirror_batch(x)
    text_input.inputs[0].CopyFrom(tensor("input", np.array([b"a"] * 8, dtype=object)))
    bad = [
        mirror_batch(x, model="no_such_model"),
        truncated,
        narrow,
        wrong_rows,
        text_input,
        driftserve_pb2.MirrorBatch(model=MODEL, rows=0),
    ]
    summary = sidecar.publish([good[0], *bad, good[1]])
    assert (summary.batches, summary.rows) == (2, 512)
    assert sidecar.sample("driftserve_sidecar_rejected_rows_total", reason="unknown_model") == 8
    assert sidecar.sample("driftserve_sidecar_rejected_rows_total", reason="width_mismatch") == 8
    assert sidecar.sample("driftserve_sidecar_rejected_rows_total", reason="malformed") == 8 + 9 + 8
    assert sidecar.sample("driftserve_sidecar_batches_total") == 2
    assert sidecar.report().rows_seen == 512
    health = health_pb2_grpc.HealthStub(sidecar.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_shadow_comparison_matches_a_direct_onnxruntime_run(
    sidecar: InProcessSidecar, primary: ort.InferenceSession, shadow_session: ort.InferenceSession
) -> None:
    rows = reference_rows(np.random.default_rng(6), 2048)
    rows[:, 0] += 2.0  # move rows towards the decision boundary so the versions disagree sometimes
    sidecar.publish(batches_from(rows, primary))
    p_label, p_prob = primary.run(["label", "probabilities"], {"input": rows})
    s_label, s_prob = shadow_session.run(["label", "probabilities"], {"input": rows})
    delta = np.abs(p_prob.astype(np.float64) - s_prob.astype(np.float64))
    shadow = sidecar.report().shadow
    assert (shadow.primary_version, shadow.shadow_version, shadow.rows, shadow.errors) == ("1", "2", 2048, 0)
    assert shadow.agreement == pytest.approx(np.mean(p_label == s_label), abs=1e-12)
    assert shadow.agreement < 1.0
    assert shadow.mean_abs_delta == pytest.approx(delta.mean(), rel=1e-6)
    assert shadow.max_abs_delta == pytest.approx(delta.max(), rel=1e-6)
    assert shadow.primary_latency_p50_s == pytest.approx(0.001)  # end to end, as the server measured it
    assert shadow.shadow_latency_p50_s > 0
    # Like with like: the primary's bare inference time, measured beside the shadow's in the sidecar.
    assert 0 < shadow.primary_inference_p50_s <= shadow.primary_inference_p99_s
    assert 0 < shadow.shadow_latency_p50_s <= shadow.shadow_latency_p99_s
    assert shadow.primary_inference_p50_s < shadow.primary_latency_p50_s
    assert sidecar.sample("driftserve_shadow_rows_total", model=MODEL) == 2048
    assert sidecar.sample("driftserve_shadow_agreement_ratio", model=MODEL) == pytest.approx(shadow.agreement)
    assert sidecar.sample("driftserve_shadow_abs_delta", model=MODEL, stat="max") == pytest.approx(shadow.max_abs_delta)
    # One shadow run per mirrored request of 16 rows; primary latencies come from latency_s.
    assert sidecar.sample("driftserve_shadow_latency_seconds_count", model=MODEL, role="shadow") == 2048 // 16
    assert sidecar.sample("driftserve_shadow_latency_seconds_count", model=MODEL, role="primary") == 2048 // 16
    assert (
        sidecar.sample("driftserve_shadow_latency_seconds_count", model=MODEL, role="primary_inference") == 2048 // 16
    )


def test_dashboard_renders_features_and_svg(sidecar: InProcessSidecar, primary: ort.InferenceSession) -> None:
    sidecar.publish(batches_from(reference_rows(np.random.default_rng(7), 1024), primary))
    status, page = sidecar.http("/dashboard")
    assert status == 200
    assert (
        page.startswith("<!DOCTYPE html>")
        and "<svg" in page
        and "<script" not in page
        and "http" not in page.split("<body>")[1]
    )
    _, _, names = training_data()
    assert all(name in page for name in names)
    assert "Shadow comparison" in page
    assert sidecar.http("/dashboard?window=cumulative")[0] == 200


def test_api_and_grpc_errors_name_what_was_wrong(sidecar: InProcessSidecar) -> None:
    status, body = sidecar.http("/api/drift/nope")
    assert status == 404 and "nope" in json.loads(body)["error"] and MODEL in json.loads(body)["error"]
    status, body = sidecar.http(f"/api/drift/{MODEL}?window=hourly")
    assert status == 400 and "sliding" in json.loads(body)["error"]
    assert json.loads(sidecar.http("/api/drift")[1]) == {"models": [MODEL]}
    assert sidecar.http("/nowhere")[0] == 404
    stub = driftserve_pb2_grpc.MonitorStub(sidecar.channel)
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetDriftReport(driftserve_pb2.DriftReportRequest(model="nope"), timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as bad_window:
        stub.GetDriftReport(driftserve_pb2.DriftReportRequest(model=MODEL, window="hourly"), timeout=10)
    assert bad_window.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(stub.ListModels(driftserve_pb2.ListModelsRequest(), timeout=10).models) == [MODEL]


def test_metrics_endpoint_serves_drift_shadow_and_sidecar_families(
    sidecar: InProcessSidecar, primary: ort.InferenceSession
) -> None:
    sidecar.publish(batches_from(reference_rows(np.random.default_rng(8), 512), primary))
    status, text = sidecar.http("/metrics")
    assert status == 200
    for family in (
        "driftserve_drift_psi",
        "driftserve_drift_ks_statistic",
        "driftserve_drift_ks_pvalue",
        "driftserve_drift_window_rows",
        "driftserve_drift_alert",
        "driftserve_shadow_agreement_ratio",
        "driftserve_shadow_abs_delta",
        "driftserve_shadow_latency_seconds_bucket",
        "driftserve_shadow_rows_total",
        "driftserve_sidecar_batches_total",
        "driftserve_sidecar_rows_total",
        "driftserve_sidecar_rejected_rows_total",
        "driftserve_sidecar_ingest_duration_seconds_bucket",
    ):
        assert f"\n{family}{{" in text or f"\n{family} " in text, family
    assert f'driftserve_drift_psi{{feature="mean_radius",model="{MODEL}",window="sliding"}}' in text


def test_unix_socket_listen(repository, primary: ort.InferenceSession, tmp_path) -> None:
    with InProcessSidecar(repository, listen=f"unix:{tmp_path / 'sidecar.sock'}", http_port=-1) as sidecar:
        assert sidecar.running.address.startswith("unix:") and sidecar.running.http_port == -1
        summary = sidecar.publish(batches_from(reference_rows(np.random.default_rng(9), 256), primary))
        assert summary.rows == 256


def test_alert_runs_the_configured_command_with_the_payload(tmp_path, primary: ort.InferenceSession) -> None:
    out = tmp_path / "payload.json"
    hook = [sys.executable, "-c", f"import sys; open({str(out)!r}, 'wb').write(sys.stdin.buffer.read())"]
    repository = build_repository(
        tmp_path / "models", drift={"actions": {"command": hook, "cooldown_s": 0}}, shadow=False
    )
    x, _, names = training_data()
    rows = reference_rows(np.random.default_rng(10), 2048)
    rows[:, names.index(SHIFTED)] += x[:, names.index(SHIFTED)].std()
    with InProcessSidecar(repository) as sidecar:
        sidecar.publish(batches_from(rows, primary))
        sidecar.report()
        wait_for(lambda: out.is_file() and out.stat().st_size > 0, 20.0, "the alert command's payload")
        assert sidecar.report().HasField("shadow") is False
    payload = json.loads(out.read_text())
    assert payload["model"] == MODEL
    assert SHIFTED in {a["feature"] for a in payload["alerting"]}
    assert any(t["feature"] == SHIFTED and t["current"] == "alert" for t in payload["transitions"])


def test_every_offered_row_is_ingested_or_counted_as_dropped(repository, primary: ort.InferenceSession) -> None:
    batch = batches_from(reference_rows(np.random.default_rng(13), 2048), primary, per_batch=2048)[0]
    with InProcessSidecar(repository, queue_batches=1, shadow=False) as sidecar:
        summary = sidecar.publish([batch] * 60)
        dropped = sidecar.sample("driftserve_sidecar_rejected_rows_total", reason="queue_full")
        assert summary.rows + dropped == 60 * 2048
        assert sidecar.report().rows_seen == summary.rows == sidecar.sample("driftserve_sidecar_rows_total")
        assert sidecar.sample("driftserve_sidecar_ingest_duration_seconds_count", stage="update") == summary.batches


def test_a_model_with_a_broken_drift_section_is_skipped_and_the_rest_monitored(tmp_path) -> None:
    repository = build_repository(tmp_path / "models", shadow=False)
    broken = repository / "broken"
    broken.mkdir()
    (broken / "config.yaml").write_text("drift: {reference: missing.json}\n")
    (repository / "plain").mkdir()  # no drift section, no shadow: not monitored, not an error
    with InProcessSidecar(repository) as sidecar:
        assert sorted(sidecar.running.state.models) == [MODEL]
        summary = sidecar.publish([mirror_batch(reference_rows(np.random.default_rng(14), 16), model="broken")])
        assert summary.rows == 0
        assert sidecar.sample("driftserve_sidecar_rejected_rows_total", reason="unknown_model") == 16
