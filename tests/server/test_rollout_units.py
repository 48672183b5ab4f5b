"""Rollout pieces on their own: the canary router, the state store, the analysis, the gate metrics."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from driftserve.core.config import ModelConfig, RolloutThresholds
from driftserve.core.rollout_state import CANARY, RolloutState, StateStore
from driftserve.server.metrics import ServerMetrics
from driftserve.server.repository import ModelEntry, ModelRepository, ServedVersion
from driftserve.server.rollout import analysis
from driftserve.server.rollout.gate import roc_auc

N = 10_000


def _repository(tmp_path: Path, weight: float) -> ModelRepository:
    repository = ModelRepository(tmp_path, ServerMetrics(CollectorRegistry()))
    served: dict[int, Any] = {
        v: ServedVersion(SimpleNamespace(name="m", version=v), None, None)  # type: ignore[arg-type]
        for v in (1, 2)
    }
    entry = ModelEntry("m", config=ModelConfig(), versions=served)
    entry.primary, entry.canary = 1, {2: weight}
    repository.models["m"] = entry
    return repository


@pytest.mark.parametrize("weight", [0.05, 0.25, 0.5])
def test_canary_share_is_within_two_points_and_sticky_by_request_id(tmp_path: Path, weight: float) -> None:
    repository = _repository(tmp_path, weight)
    by_id = [repository.route("m", "", f"req-{i}").version for i in range(N)]
    assert abs(by_id.count(2) / N - weight) < 0.02
    again = [repository.route("m", "", f"req-{i}").version for i in range(N)]
    assert again == by_id
    anonymous = [repository.route("m").version for _ in range(N)]
    assert abs(anonymous.count(2) / N - weight) < 0.02


def test_weight_zero_and_promotion_switch_routing(tmp_path: Path) -> None:
    repository = _repository(tmp_path, 0.0)
    assert {repository.route("m", "", f"r{i}").version for i in range(1000)} == {1}
    repository.models["m"].primary, repository.models["m"].canary = 2, {}
    assert {repository.route("m", "", f"r{i}").version for i in range(1000)} == {2}
    assert repository.route("m", "1").version == 1  # pinned requests still reach a loaded version


def test_state_store_round_trips_atomically(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    state = RolloutState(model="m", candidate=3, primary=2, stage=CANARY, step=1, weight=0.25)
    state.rejected["2"] = "below min"
    store.save(state)
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["m.json"]  # no temporary file left
    loaded = store.load_all()["m"]
    assert (loaded.stage, loaded.step, loaded.weight, loaded.candidate, loaded.rejected) == (
        CANARY,
        1,
        0.25,
        3,
        {"2": "below min"},
    )
    (tmp_path / "state" / "broken.json").write_text("{not json")
    (tmp_path / "state" / "odd.json").write_text(
        json.dumps({"model": "odd", "candidate": 1, "primary": 1, "stage": "nope"})
    )
    assert set(store.load_all()) == {"m"}


def _window(cand_latency: float, agree: float, rows: int = 200) -> analysis.StepWindow:
    window = analysis.StepWindow()
    rng = np.random.default_rng(0)
    for _ in range(rows):
        window.primary.requests += 1
        window.primary.latencies_s.append(1e-3)
        window.primary.scores.append(float(rng.random()))
        window.candidate.requests += 1
        window.candidate.latencies_s.append(cand_latency)
        window.candidate.scores.append(float(rng.random()))
    window.add_comparison(rows, int(rows * agree))
    return window


def test_judge_passes_a_like_candidate_and_names_each_breach() -> None:
    thresholds = RolloutThresholds(max_error_rate=0.01, max_p99_ratio=2.0, min_agreement=0.9, max_output_psi=0.25)
    assert analysis.breaches(analysis.judge(_window(1e-3, 1.0), thresholds, 50, float("nan"))) == []
    slow = analysis.breaches(analysis.judge(_window(5e-3, 1.0), thresholds, 50, float("nan")))
    assert [c.name for c in slow] == ["p99_ratio"] and "p99_ratio 5" in analysis.describe(slow[0])
    disagreeing = analysis.breaches(analysis.judge(_window(1e-3, 0.5), thresholds, 50, float("nan")))
    assert [c.name for c in disagreeing] == ["agreement"]
    # Too few samples: nothing is judged yet, whatever the values.
    assert analysis.breaches(analysis.judge(_window(5e-3, 0.0, rows=10), thresholds, 50, float("nan"))) == []


def test_psi_and_auc() -> None:
    rng = np.random.default_rng(1)
    same = analysis.psi(rng.normal(size=5000), rng.normal(size=5000))
    shifted = analysis.psi(rng.normal(size=5000), rng.normal(1.0, 1.0, size=5000))
    assert same < 0.05 < 0.25 < shifted
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
