"""Fleet-wide drift: window state on the wire, and an aggregator merging real sidecars exactly."""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client import CollectorRegistry

from driftserve.api import driftserve_pb2, driftserve_pb2_grpc
from driftserve.core.drift_config import DriftConfig
from driftserve.core.ports import free_port
from driftserve.sidecar.drift.detector import ModelDriftMonitor
from driftserve.sidecar.drift.profile import ReferenceProfile
from driftserve.sidecar.fleet.aggregator import FleetState
from driftserve.sidecar.fleet.discovery import parse_targets
from driftserve.sidecar.fleet.settings import FleetSettings
from driftserve.sidecar.window_state import (
    FORMAT_VERSION,
    GroupLayout,
    StateMismatch,
    decode_counts,
    decode_model,
    encode_counts,
    encode_model,
    layout_digest,
)
from tests.sidecar.fleet_support import InProcessFleet, alert_set, items_by_key
from tests.sidecar.support import (
    MODEL,
    PROFILE_PATH,
    InProcessSidecar,
    batches_from,
    build_repository,
    reference_rows,
    training_data,
)

SHIFTED = "mean_concavity"
NAN_FEATURE = "worst_area"


@pytest.fixture(scope="module")
def fleet_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``cancer`` without a shadow (its ORT runs would only cost time here), windows of 5 minutes."""
    return build_repository(tmp_path_factory.mktemp("fleet") / "models", shadow=False)


@pytest.fixture(scope="module")
def session(fleet_repository: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(fleet_repository / MODEL / "1" / "model.onnx"), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def replicas(fleet_repository: Path) -> Iterator[list[InProcessSidecar]]:
    """Four replicas' sidecars plus, last, one sidecar that sees the whole stream."""
    started: list[InProcessSidecar] = []
    try:
        for _ in range(5):
            started.append(InProcessSidecar(fleet_repository, report_interval_s=3600))
        yield started
    finally:
        for sidecar in started:
            sidecar.close()


def _column(name: str) -> int:
    return training_data()[2].index(name)


def _stream(rng: np.random.Generator, reference: int, shifted: int) -> np.ndarray:
    """Reference rows, then rows with one feature shifted; a tenth of one feature missing throughout."""
    x = np.concatenate([reference_rows(rng, reference), reference_rows(rng, shifted)])
    column = training_data()[0][:, _column(SHIFTED)]
    x[reference:, _column(SHIFTED)] += 0.8 * column.std()
    x[rng.random(x.shape[0]) < 0.1, _column(NAN_FEATURE)] = np.nan
    return x


def _monitor(repository: Path) -> ModelDriftMonitor:
    profile = ReferenceProfile.load(repository / MODEL / PROFILE_PATH)
    config = DriftConfig(reference=PROFILE_PATH, window={"pane_seconds": 5.0, "panes": 4})
    return ModelDriftMonitor(profile, config, MODEL)


def _layouts(monitor: ModelDriftMonitor) -> list[GroupLayout]:
    return [GroupLayout(g.source, *g.cumulative.counts.shape, layout_digest(g.ring)) for g in monitor.group_states()]


# ------------------------------------------------------------------------------------ the codec
def test_counts_round_trip_sparse_and_dense() -> None:
    rng = np.random.default_rng(1)
    extra = rng.integers(0, 5, (3, 2))
    for density in (0.01, 0.9):
        counts = np.where(rng.random((3, 40)) < density, rng.integers(1, 2**40, (3, 40)), 0)
        message = encode_counts(7, counts, extra, 123)
        assert message.sparse == (density < 0.5)  # sparse only where it is smaller
        decoded = decode_counts(driftserve_pb2.PaneCounts.FromString(message.SerializeToString()), 3, 40, "pane")
        total, total_extra = np.zeros((3, 40), np.int64), np.zeros((3, 2), np.int64)
        decoded.add_to(total, total_extra)
        assert (decoded.pane, decoded.rows) == (7, 123)
        np.testing.assert_array_equal(total, counts)
        np.testing.assert_array_equal(total_extra, extra)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: setattr(m, "count_bytes", 3), "expected one of"),
        (lambda m: setattr(m, "bin_count", m.bin_count + b"\x01"), "bin indices but"),
        (lambda m: setattr(m, "extra", m.extra[:-8]), "expected 3 features x 2"),
        (lambda m: setattr(m, "extra", np.full(6, -1, "<i8").tobytes()), "must not be negative"),
        (lambda m: setattr(m, "bin_index", np.array([5, 200], "<u2").tobytes()), "strictly increasing and below 120"),
        (lambda m: setattr(m, "bin_index", np.array([9, 0], "<u2").tobytes()), "strictly increasing"),
        (lambda m: setattr(m, "sparse", False), "2 dense counts, expected 3 features x 40"),
        (
            lambda m: (setattr(m, "count_bytes", 8), setattr(m, "bin_count", np.full(2, 2**63, "<u8").tobytes())),
            r"2\*\*63",
        ),
    ],
)
def test_malformed_counts_are_refused_with_a_reason(change: object, message: str) -> None:
    counts = np.zeros((3, 40), np.int64)
    counts[0, 5], counts[2, 9] = 4, 2
    pane = encode_counts(1, counts, np.zeros((3, 2), np.int64), 6)
    change(pane)  # type: ignore[operator]
    with pytest.raises(StateMismatch, match=message):
        decode_counts(pane, 3, 40, "pane 1")


def test_model_state_must_match_the_aggregators_layout(fleet_repository: Path) -> None:
    monitor = _monitor(fleet_repository)
    rows = reference_rows(np.random.default_rng(2), 300)
    monitor.update(rows, None, 1000.0)
    message = encode_model(MODEL, monitor, None, 3)
    layouts = _layouts(monitor)
    decoded = decode_model(message, layouts)
    assert (decoded.rows_total, decoded.batches_seen, len(decoded.groups[0].panes)) == (300, 3, 1)
    moved = [GroupLayout(g.source, g.features, g.bins, "0" * 32) for g in layouts]
    with pytest.raises(StateMismatch, match="bin edges or window panes differ"):
        decode_model(message, moved)
    with pytest.raises(StateMismatch, match=r"count groups .* expected"):
        decode_model(message, [*layouts[:1], GroupLayout("output", 9, 9, "x")])


# ------------------------------------------------------------------------------------ the RPC
def test_sidecar_exports_its_window_state(replicas: list[InProcessSidecar], session: ort.InferenceSession) -> None:
    sidecar = InProcessSidecar(replicas[0].settings.model_repository, report_interval_s=3600)
    try:
        sidecar.publish(batches_from(reference_rows(np.random.default_rng(3), 600), session))
        stub = driftserve_pb2_grpc.MonitorStub(sidecar.channel)
        state = stub.GetWindowState(driftserve_pb2.WindowStateRequest(), timeout=30)
        assert state.format_version == FORMAT_VERSION and len(state.instance_id) == 32
        (model,) = state.models
        assert (model.model, model.rows_total, model.panes, model.pane_seconds) == (MODEL, 600, 60, 5.0)
        assert [g.source for g in model.groups] == ["input", "output"]
        assert sum(p.rows for p in model.groups[0].panes) == model.groups[0].cumulative.rows == 600
        # Compact: about three bytes per non-zero bin (a two-byte index gap and a one-byte count).
        nonzero = sum(len(p.bin_count) for g in model.groups for p in [*g.panes, g.cumulative] if p.sparse)
        assert nonzero > 0 and model.ByteSize() < 3.5 * nonzero
        with pytest.raises(grpc.RpcError) as info:
            stub.GetWindowState(driftserve_pb2.WindowStateRequest(models=["nope"]), timeout=30)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND and "'nope'" in str(info.value.details())
    finally:
        sidecar.close()


# ------------------------------------------------------------------------------------ exactness
def test_four_replicas_merge_to_exactly_one_sidecar(
    replicas: list[InProcessSidecar], fleet_repository: Path, session: ort.InferenceSession
) -> None:
    """Disjoint quarters of one stream on four sidecars == the whole stream on one."""
    *quarters, whole = replicas
    batches = batches_from(_stream(np.random.default_rng(4), 4_000, 2_000), session, per_batch=250)
    for i, sidecar in enumerate(quarters):
        sidecar.publish(batches[i::4])
    whole.publish(batches)
    with InProcessFleet(fleet_repository, [s.running.address for s in quarters]) as fleet:
        fleet.pull()
        for _ in range(2):  # the same number of hysteresis steps on both sides
            merged = fleet.report()
            single = whole.running.state.report(MODEL, max_age_s=0.0)
        assert merged.rows_seen == single.rows_seen == 6_000
        assert merged.batches_seen == single.batches_seen == len(batches)
        fleet_items, single_items = items_by_key(merged.items), items_by_key(single.items)
        assert fleet_items.keys() == single_items.keys() and len(fleet_items) == 2 * (30 + 3)
        for key, expected in single_items.items():
            got = fleet_items[key]
            assert got.window_rows == expected.window_rows, key
            assert got.unseen_categories == expected.unseen_categories, key
            for stat in ("psi", "psi_expected", "ks_statistic", "ks_bound", "ks_pvalue", "ks_pvalue_corrected"):
                assert getattr(got, stat) == pytest.approx(
                    getattr(expected, stat), rel=1e-12, abs=1e-300, nan_ok=True
                ), (key, stat)
            assert got.missing_share == pytest.approx(expected.missing_share, rel=1e-12), key
            assert got.status == expected.status, key
        alerts = alert_set(single.items)
        assert (SHIFTED, "sliding") in alerts and alert_set(merged.items) == alerts
        assert fleet_items[(NAN_FEATURE, "sliding")].missing_share == pytest.approx(0.1, abs=0.02)
        # The same report through the aggregator's transports, marked fleet-wide.
        message = fleet.grpc_report()
        assert message.rows_seen == 6_000 and [r.status for r in message.fleet.replicas] == ["contributing"] * 4
        doc = fleet.http_json(f"/api/drift/{MODEL}")
        assert doc["fleet"]["contributing"] == 4 and doc["status"] == "alert"
        assert {(a["feature"], a["window"]) for a in doc["alerts"]} == alerts
        assert fleet.registry.get_sample_value("driftserve_fleet_replicas", {"status": "contributing"}) == 4
        psi = fleet.registry.get_sample_value(
            "driftserve_drift_psi", {"model": MODEL, "feature": SHIFTED, "window": "sliding"}
        )
        assert psi == pytest.approx(single_items[(SHIFTED, "sliding")].psi, rel=1e-12)
        with pytest.raises(grpc.RpcError) as info:
            driftserve_pb2_grpc.MonitorStub(fleet.channel).GetWindowState(
                driftserve_pb2.WindowStateRequest(), timeout=30
            )
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.timeout(600)  # ~15 s normally; generous for a loaded box
def test_fleet_alerts_with_fewer_rows_per_replica_than_one_replica_needs(
    fleet_repository: Path, session: ort.InferenceSession
) -> None:
    """A shift reaching all four replicas: the fleet alerts long before any one replica could."""
    rng = np.random.default_rng(5)
    step = 50
    with (
        InProcessSidecar(fleet_repository, report_interval_s=3600) as a,
        InProcessSidecar(fleet_repository, report_interval_s=3600) as b,
        InProcessSidecar(fleet_repository, report_interval_s=3600) as c,
        InProcessSidecar(fleet_repository, report_interval_s=3600) as d,
    ):
        sidecars = [a, b, c, d]
        with InProcessFleet(fleet_repository, [s.running.address for s in sidecars]) as fleet:
            fleet_rows = single_rows = None
            per_replica = 0
            while single_rows is None and per_replica < 2_000:
                per_replica += step
                for sidecar in sidecars:
                    sidecar.publish(batches_from(_stream(rng, 0, step), session))
                fleet.pull()
                if fleet_rows is None and (SHIFTED, "sliding") in alert_set(fleet.report().items):
                    fleet_rows = per_replica
                if (SHIFTED, "sliding") in alert_set(a.running.state.report(MODEL, max_age_s=0.0).items):
                    single_rows = per_replica
    assert fleet_rows is not None and single_rows is not None, (fleet_rows, single_rows)
    assert fleet_rows < single_rows, (fleet_rows, single_rows)


def test_a_missing_or_foreign_replica_never_blocks_the_report(
    replicas: list[InProcessSidecar], fleet_repository: Path, tmp_path: Path
) -> None:
    """Nothing listening, and a sidecar with other bins: both listed, neither merged, the report served."""
    foreign_repo = build_repository(
        tmp_path / "models", shadow=False, drift={"window": {"pane_seconds": 1.0, "panes": 60}}
    )
    dead = f"127.0.0.1:{free_port()}"
    with InProcessSidecar(foreign_repo, report_interval_s=3600) as foreign:
        live = replicas[0].running.address
        with InProcessFleet(fleet_repository, [live, dead, foreign.running.address], pull_timeout_s=2) as fleet:
            fleet.pull()
            report = fleet.report()
            statuses = {r.address: r for r in report.fleet.replicas}
            assert statuses[live].status == "contributing"
            assert statuses[dead].status == "unreachable" and "UNAVAILABLE" in statuses[dead].error
            foreign_status = statuses[foreign.running.address]
            assert foreign_status.status == "incompatible" and "window panes differ" in foreign_status.error
            assert report.rows_seen == replicas[0].running.state.report(MODEL).rows_seen
            assert fleet.registry.get_sample_value("driftserve_fleet_replicas", {"status": "unreachable"}) == 1
            with urllib.request.urlopen(f"http://127.0.0.1:{fleet.running.http_port}/dashboard", timeout=30) as r:
                html = r.read().decode()
            assert "Fleet-wide" in html and "unreachable" in html


def test_a_stopped_replica_is_stale_then_forgotten(fleet_repository: Path, session: ort.InferenceSession) -> None:
    """Its last state stays merged while stale, and leaves the merge after ``forget_after_s``."""
    with InProcessSidecar(fleet_repository, report_interval_s=3600) as kept:
        stopped = InProcessSidecar(fleet_repository, report_interval_s=3600)
        addresses = [kept.running.address, stopped.running.address]
        open_ = True
        try:
            kept.publish(batches_from(reference_rows(np.random.default_rng(6), 300), session))
            stopped.publish(batches_from(reference_rows(np.random.default_rng(7), 200), session))
            with InProcessFleet(fleet_repository, addresses, forget_after_s=1.0, pull_timeout_s=1) as fleet:
                fleet.pull()
                assert fleet.report().rows_seen == 500
                stopped.close()
                open_ = False
                fleet.pull()
                report = fleet.report()
                status = {r.address: r for r in report.fleet.replicas}[addresses[1]]
                assert (status.status, status.rows, report.rows_seen) == ("stale", 200, 500)
                time.sleep(1.1)
                fleet.pull()
                report = fleet.report()
                status = {r.address: r for r in report.fleet.replicas}[addresses[1]]
                assert (status.status, status.rows, report.rows_seen) == ("unreachable", 0, 300)
        finally:
            if open_:
                stopped.close()


def test_a_headless_service_name_is_resolved_on_every_pull(
    fleet_repository: Path, session: ort.InferenceSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One name, one port, one address per pod (as a headless Service): scaling up is followed."""
    port = free_port()
    pods = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    ready = pods[:2]
    original = socket.getaddrinfo

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "sidecars.fleet.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ready]
        return original(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    started = []
    try:
        for i, ip in enumerate(pods):
            started.append(InProcessSidecar(fleet_repository, listen=f"{ip}:{port}", report_interval_s=3600))
            started[-1].publish(batches_from(reference_rows(np.random.default_rng(8 + i), 100 * (i + 1)), session))
        with InProcessFleet(fleet_repository, [f"sidecars.fleet.test:{port}", "no-such-host.invalid:8003"]) as fleet:
            fleet.pull()
            report = fleet.report()
            statuses = {r.address: r.status for r in report.fleet.replicas}
            assert statuses == {
                f"127.0.0.2:{port}": "contributing",
                f"127.0.0.3:{port}": "contributing",
                "no-such-host.invalid:8003": "unreachable",
            }
            assert report.rows_seen == 300
            assert "cannot resolve" in {r.address: r for r in report.fleet.replicas}["no-such-host.invalid:8003"].error
            ready.append(pods[2])  # a third pod becomes ready
            fleet.pull()
            assert fleet.report().rows_seen == 600
    finally:
        for sidecar in started:
            sidecar.close()


def test_replica_lists_are_checked() -> None:
    assert [str(t) for t in parse_targets(" a:1, [::1]:8003 ,b.c:65535")] == ["a:1", "[::1]:8003", "b.c:65535"]
    for bad, message in (
        ("a", "not host:port"),
        ("a:0", "not host:port"),
        ("fe80::1:80", "in brackets"),
        ("[nope]:80", "not an IPv6 address"),
        (" , ", "no replicas"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_targets(bad)


def test_fleet_alerts_run_the_models_actions(tmp_path: Path, session: ort.InferenceSession) -> None:
    """The command hook of the aggregator's repository runs on a fleet-level alert, with the payload."""
    replicas_repo = build_repository(tmp_path / "replicas", shadow=False)
    payload = tmp_path / "payload.json"
    hook = [sys.executable, "-c", f"import sys; open({str(payload)!r}, 'w').write(sys.stdin.read())"]
    fleet_repo = build_repository(tmp_path / "fleet", shadow=False, drift={"actions": {"command": hook}})
    # Same profile and windows (the layout digest checks it): mergeable whatever the actions.
    with (
        InProcessSidecar(replicas_repo, report_interval_s=3600) as a,
        InProcessSidecar(replicas_repo, report_interval_s=3600) as b,
    ):
        for i, sidecar in enumerate((a, b)):
            sidecar.publish(batches_from(_stream(np.random.default_rng(20 + i), 0, 400), session))
        with InProcessFleet(fleet_repo, [a.running.address, b.running.address]) as fleet:
            fleet.pull()
            assert (SHIFTED, "sliding") in alert_set(fleet.report().items)
            deadline = time.monotonic() + 30
            while not payload.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            doc = json.loads(payload.read_text())
    assert doc["model"] == MODEL and doc["rows_total"] == 800
    assert SHIFTED in json.dumps(doc["alerting"])


def test_before_the_first_pull_every_replica_is_listed(fleet_repository: Path) -> None:
    settings = FleetSettings(model_repository=fleet_repository, replicas="127.0.0.1:1,sidecars.example:8003")
    state = FleetState(settings, CollectorRegistry())
    state.load()
    assert [(r.address, r.status, r.error) for r in state.report(MODEL).fleet.replicas] == [
        ("127.0.0.1:1", "unreachable", "not pulled yet"),
        ("sidecars.example:8003", "unreachable", "not pulled yet"),
    ]
