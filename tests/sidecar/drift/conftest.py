"""Shared data generators for the drift tests: seeded, mixed-shape training-like columns."""

from __future__ import annotations

import numpy as np
import pytest

from driftserve.core.drift_config import DriftConfig

N_FEATURES = 30
FEATURE_NAMES = [f"f{i}" for i in range(N_FEATURES)]


def mixed_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """Rows of 30 features cycling through normal, log-normal, Poisson (ties), uniform and gamma."""
    makers = (
        lambda: rng.normal(size=n),
        lambda: rng.lognormal(size=n),
        lambda: rng.poisson(3.0, size=n).astype(np.float64),
        lambda: rng.uniform(-2.0, 5.0, size=n),
        lambda: rng.gamma(0.5, size=n),
    )
    return np.stack([makers[i % len(makers)]() for i in range(N_FEATURES)], axis=1)


@pytest.fixture
def base_config() -> DriftConfig:
    """Defaults with a short sliding window (6 panes of 10 s) so eviction shows within a test."""
    return DriftConfig(reference="profile.json", window={"pane_seconds": 10.0, "panes": 6})
