"""Version routing: pinned versions, the default, canary splits (sticky by request id), shadows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from driftserve.core.config import ModelConfig
from driftserve.core.errors import InvalidArgument, NotFound
from driftserve.server.metrics import ServerMetrics
from driftserve.server.repository import READY, ModelEntry, ModelRepository


def repository(tmp_path: Path, deployment: dict[str, Any], versions: tuple[int, ...] = (1, 2, 3)) -> ModelRepository:
    repo = ModelRepository(tmp_path, ServerMetrics(CollectorRegistry()))
    entry = ModelEntry("m", config=ModelConfig.model_validate({"deployment": deployment}))
    entry.versions = {v: f"v{v}" for v in versions}  # type: ignore[misc]
    entry.states = {v: (READY, "") for v in versions}
    repo.models["m"] = entry
    return repo


def test_default_is_highest_then_served_version(tmp_path: Path) -> None:
    assert repository(tmp_path, {}).route("m") == "v3"
    assert repository(tmp_path, {"served_version": 1}).route("m") == "v1"


def test_shadow_version_never_answers_unpinned_requests(tmp_path: Path) -> None:
    repo = repository(tmp_path, {"shadow_version": 3})
    assert {repo.route("m", request_id=str(i)) for i in range(50)} == {"v2"}
    assert repo.route("m", "3") == "v3"  # pinning still reaches it explicitly


def test_shadow_is_skipped_only_while_another_version_is_loaded(tmp_path: Path) -> None:
    assert repository(tmp_path, {"shadow_version": 1}).route("m") == "v3"  # not the highest: no effect
    assert repository(tmp_path, {"shadow_version": 3}, versions=(3,)).route("m") == "v3"  # all there is


def test_pinned_and_unknown_versions(tmp_path: Path) -> None:
    repo = repository(tmp_path, {})
    assert repo.route("m", "2") == "v2"
    with pytest.raises(NotFound, match="no version 9"):
        repo.route("m", "9")
    with pytest.raises(InvalidArgument, match="must be a decimal integer"):
        repo.route("m", "two")
    with pytest.raises(NotFound, match="unknown model 'x'"):
        repo.route("x")


def test_canary_split_is_weighted_and_sticky(tmp_path: Path) -> None:
    repo = repository(tmp_path, {"served_version": 1, "canary": {3: 0.2}})
    counts = Counter(repo.route("m", request_id=f"user-{i}") for i in range(5000))
    assert set(counts) == {"v1", "v3"}
    assert 0.15 < counts["v3"] / 5000 < 0.25
    assert all(repo.route("m", request_id="user-7") == repo.route("m", request_id="user-7") for _ in range(20))
