"""The retrain hook of the rollout demo: a new, complete, servable version from recent data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from driftserve.core.config import load_model_config
from examples.build_repository import load_split
from examples.files import npz_bytes, write_atomic
from examples.rollout_demo import CONFIG, MODEL

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_retrain_publishes_the_next_version_by_rename(example_repository: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / MODEL
    shutil.copytree(example_repository / MODEL / "data", model_dir / "data")
    (model_dir / "1").mkdir()
    shutil.copy(example_repository / MODEL / "1" / "model.onnx", model_dir / "1" / "model.onnx")
    x, y, _ = load_split(model_dir / "data" / "holdout.npz")
    write_atomic(model_dir / "data" / "recent.npz", npz_bytes({"X": x * 1.5, "y": y}))
    alert = json.dumps({"model": MODEL, "alerting": [{"feature": "mean_concavity"}]})
    done = subprocess.run(
        [sys.executable, "-m", "examples.retrain", "--model-dir", str(model_dir)],
        input=alert,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "mean_concavity" in done.stdout and "2/model.onnx" in done.stdout
    assert sorted(p.name for p in (model_dir / "2").iterdir()) == ["model.onnx"]  # no temporary file left
    session = ort.InferenceSession(str(model_dir / "2" / "model.onnx"), providers=["CPUExecutionProvider"])
    labels, _ = session.run(None, {"input": x})
    assert np.mean(labels == y) > 0.9


def test_demo_config_is_valid(tmp_path: Path) -> None:
    (tmp_path / MODEL).mkdir()
    (tmp_path / MODEL / "config.yaml").write_text(CONFIG.format(python=sys.executable, model_dir=tmp_path / MODEL))
    config = load_model_config(tmp_path / MODEL)
    assert config.deployment.managed and config.drift is not None and config.drift.actions.command
