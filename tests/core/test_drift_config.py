"""DriftConfig validation: defaults, and errors that name the key and what is allowed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from driftserve.core.drift_config import DriftConfig


def test_defaults() -> None:
    cfg = DriftConfig(reference="profile.json")
    assert (cfg.coarse_bins, cfg.window.pane_seconds, cfg.window.panes) == (10, 10.0, 60)
    assert (cfg.psi.warn, cfg.psi.alert, cfg.ks.alpha, cfg.ks.correction) == (0.1, 0.25, 0.01, "bh")
    assert cfg.mirror.sample_rate == 1.0 and cfg.monitor_outputs


@pytest.mark.parametrize(
    "overrides, key, message",
    [
        ({"bogus": 1}, "bogus", "Extra inputs are not permitted"),
        ({"psi": {"warn": 0.3, "alert": 0.2}}, "psi", "warn (0.3) must be <= alert (0.2)"),
        ({"ks": {"correction": "holm"}}, "ks.correction", "'bh' or 'bonferroni'"),
        ({"mirror": {"sample_rate": 1.5}}, "mirror.sample_rate", "less than or equal to 1"),
        ({"coarse_bins": 1}, "coarse_bins", "greater than or equal to 2"),
        ({"window": {"panes": 0}}, "window.panes", "greater than or equal to 1"),
        ({"features": ["a", "a"]}, "features", "more than once"),
        ({"actions": {"webhook_url": "not a url"}}, "actions.webhook_url", "URL"),
        ({"hysteresis": {"clear_ratio": 0}}, "hysteresis.clear_ratio", "greater than 0"),
        ({"missing": {"warn": 0.1}}, "missing.alert", "Field required"),
    ],
)
def test_errors_name_key_and_allowed_values(overrides: dict, key: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        DriftConfig(reference="p.json", **overrides)
    text = str(info.value)
    assert key in text and message in text


def test_reference_is_required() -> None:
    with pytest.raises(ValidationError, match="reference"):
        DriftConfig()  # type: ignore[call-arg]


def test_config_import_does_not_load_numba() -> None:
    import subprocess
    import sys

    code = "import sys, driftserve.core.drift_config; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
