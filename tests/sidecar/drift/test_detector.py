"""ModelDriftMonitor mechanics: windows with a fake clock, bounded state, outputs, errors, threads."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from driftserve.core.drift_config import DriftConfig
from driftserve.sidecar.drift.detector import CUMULATIVE, SLIDING, ModelDriftMonitor
from driftserve.sidecar.drift.profile import FeatureProfile, ReferenceProfile, build_profile, profile_column

from .conftest import FEATURE_NAMES, mixed_rows


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    return build_profile(mixed_rows(np.random.default_rng(0), 20_000), FEATURE_NAMES)


def test_sliding_window_evicts_old_panes_with_a_fake_clock(profile: ReferenceProfile, base_config: DriftConfig) -> None:
    mon = ModelDriftMonitor(profile, base_config, "m")  # 6 panes of 10 s
    rng = np.random.default_rng(1)
    for second in range(60):
        mon.update(mixed_rows(rng, 10), None, float(second))
    rep = mon.report(59.0)
    assert rep.get("f0", SLIDING).window_rows == 600
    assert rep.get("f0", CUMULATIVE).window_rows == 600
    rep = mon.report(75.0)  # panes 0 and 1 (seconds 0-19) evicted; pane 7 is current
    assert rep.get("f0", SLIDING).window_rows == 400
    assert rep.get("f0", CUMULATIVE).window_rows == 600
    rep = mon.report(1000.0)
    assert rep.get("f0", SLIDING).window_rows == 0
    assert rep.get("f0", SLIDING).status == "insufficient"
    assert rep.get("f0", CUMULATIVE).window_rows == 600 == rep.rows_total


def test_late_timestamps_count_into_the_current_pane(profile: ReferenceProfile, base_config: DriftConfig) -> None:
    mon = ModelDriftMonitor(profile, base_config, "m")
    rng = np.random.default_rng(2)
    mon.update(mixed_rows(rng, 10), None, 100.0)
    mon.update(mixed_rows(rng, 10), None, 5.0)
    assert mon.report(100.0).get("f1", SLIDING).window_rows == 20


def test_state_size_does_not_grow_with_rows(profile: ReferenceProfile, base_config: DriftConfig) -> None:
    mon = ModelDriftMonitor(profile, base_config, "m")
    before = mon.state_nbytes
    rng = np.random.default_rng(3)
    batch = mixed_rows(rng, 5000)
    for i in range(40):
        mon.update(batch, None, float(i * 7))
    mon.report(300.0)
    assert mon.rows_total == 200_000
    assert mon.state_nbytes == before
    assert before < 30 * 1001 * 8 * (6 + 2) + 10_000  # panes + window + total, per feature and bin


def test_width_mismatch_and_bad_dtype_are_precise(profile: ReferenceProfile, base_config: DriftConfig) -> None:
    mon = ModelDriftMonitor(profile, base_config, "m")
    with pytest.raises(ValueError, match="inputs have 29 columns, the reference profile has 30 features"):
        mon.update(np.zeros((2, 29)), None, 0.0)
    with pytest.raises(ValueError, match="must be 2-D"):
        mon.update(np.zeros(30), None, 0.0)
    with pytest.raises(ValueError, match="must hold numbers"):
        mon.update(np.zeros((2, 30), dtype=object), None, 0.0)
    mon.update(np.zeros((2, 30), dtype=np.int32), None, 0.0)  # integers are converted
    assert mon.rows_total == 2


def test_unknown_features_in_config_are_rejected(profile: ReferenceProfile) -> None:
    with pytest.raises(ValueError, match=r"drift.features \['nope'\] are not in the reference profile"):
        ModelDriftMonitor(profile, DriftConfig(reference="p", features=["f0", "nope"]), "m")
    with pytest.raises(ValueError, match=r"drift.categorical \['f0'\] are not categorical"):
        ModelDriftMonitor(profile, DriftConfig(reference="p", categorical=["f0"]), "m")


def test_feature_subset_reads_the_right_columns(profile: ReferenceProfile) -> None:
    cfg = DriftConfig(reference="p", features=["f3", "f0"], min_window_rows=100)
    mon = ModelDriftMonitor(profile, cfg, "m")
    X = mixed_rows(np.random.default_rng(4), 2000)
    X[:, 0] = np.nan
    mon.update(X, None, 0.0)
    rep = mon.report(0.0)
    assert {i.feature for i in rep.items} == {"f3", "f0"}
    assert rep.get("f0", SLIDING).missing_share == 1.0
    assert rep.get("f3", SLIDING).missing_share == 0.0


def test_outputs_are_monitored_and_checked() -> None:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(5000, 2))
    proba = 1 / (1 + np.exp(-X[:, 0]))
    outputs = [
        FeatureProfile(
            **{
                **vars(profile_column(proba, "probabilities[1]", "numeric", 100)),
                "tensor": "probabilities",
                "column": 1,
            }
        ),
        FeatureProfile(
            **{
                **vars(profile_column((proba > 0.5).astype(float), "label", "categorical")),
                "tensor": "label",
                "column": None,
            }
        ),
    ]
    prof = ReferenceProfile(features=build_profile(X, ["a", "b"]).features, outputs=outputs)
    mon = ModelDriftMonitor(prof, DriftConfig(reference="p", min_window_rows=100), "m")
    live = rng.normal(size=(1000, 2))
    p1 = 1 / (1 + np.exp(-live[:, 0]))
    mon.update(live, {"probabilities": np.stack([1 - p1, p1], 1), "label": (p1 > 0.5).astype(np.int64)}, 0.0)
    rep = mon.report(0.0)
    assert rep.get("probabilities[1]", SLIDING).source == "output"
    assert rep.get("probabilities[1]", SLIDING).window_rows == 1000
    assert math.isnan(rep.get("label", SLIDING).ks_statistic)
    with pytest.raises(ValueError, match="outputs lack tensor 'label'"):
        mon.update(live, {"probabilities": np.stack([1 - p1, p1], 1)}, 1.0)
    with pytest.raises(ValueError, match="expected 1000 rows like the inputs"):
        mon.update(live, {"probabilities": np.zeros((3, 2)), "label": np.zeros(1000)}, 1.0)
    mon.update(live, None, 2.0)  # outputs may be absent from a batch
    assert mon.report(2.0).get("probabilities[1]", SLIDING).window_rows == 1000


def test_unseen_categories_are_evidence_not_errors() -> None:
    rng = np.random.default_rng(6)
    X = np.stack([rng.integers(0, 3, 5000).astype(float), rng.normal(size=5000)], 1)
    prof = build_profile(X, ["colour", "x"], categorical=["colour"])
    cfg = DriftConfig(reference="p", categorical=["colour"], min_window_rows=100, hysteresis={"min_consecutive": 1})
    mon = ModelDriftMonitor(prof, cfg, "m")
    live = np.stack([rng.integers(0, 5, 1000).astype(float), rng.normal(size=1000)], 1)
    mon.update(live, None, 0.0)
    item = mon.report(0.0).get("colour", SLIDING)
    assert item.unseen_categories == int(np.sum(live[:, 0] >= 3))
    assert item.status == "alert"
    assert any("absent from the reference" in r for r in item.reasons)


def test_reset_forgets_counts(profile: ReferenceProfile, base_config: DriftConfig) -> None:
    mon = ModelDriftMonitor(profile, base_config, "m")
    mon.update(mixed_rows(np.random.default_rng(7), 100), None, 0.0)
    mon.reset()
    assert mon.rows_total == 0
    assert mon.report(0.0).get("f0", CUMULATIVE).window_rows == 0


def test_update_and_report_from_two_threads(profile: ReferenceProfile, base_config: DriftConfig) -> None:
    mon = ModelDriftMonitor(profile, base_config, "m")
    batch = mixed_rows(np.random.default_rng(8), 256)
    errors: list[BaseException] = []

    def ingest() -> None:
        try:
            for i in range(200):
                mon.update(batch, None, i * 0.1)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=ingest)
    thread.start()
    seen = []
    while thread.is_alive():
        rep = mon.report(0.0)
        rows = {i.window_rows for i in rep.items if i.window == CUMULATIVE}
        assert len(rows) == 1  # every feature sees the same, whole batches
        seen.append(rows.pop() % 256)
    thread.join()
    assert not errors
    assert set(seen) <= {0}
    assert mon.report(20.0).rows_total == 200 * 256
