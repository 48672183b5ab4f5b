"""A drift alert's retrain hook: train a new breast-cancer model on recent data, publish it as the
next version of the model, and let the server's rollout take it from there.

The drift sidecar runs this command when a feature of the model enters ``alert``, with the alert as
JSON on stdin (``drift.actions.command`` in the model's config.yaml)::

    drift:
      actions: {command: [python, -m, examples.retrain, --model-dir, /path/to/repo/breast_cancer_lr]}

It reads the training rows (``data/train.npz``) and the recent labelled rows the application
collected (``data/recent.npz``: ``X``, ``y``), fits a standardized logistic regression on both, checks
the ONNX export against scikit-learn, and writes ``<next version>/model.onnx`` by rename, so a
server polling the repository (``--poll-interval-s``) picks up a complete file and runs its gate,
shadow, canary and promotion.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from examples.build_repository import _export, _verify, load_split
from examples.files import write_atomic

RECENT_FILENAME = "recent.npz"


def next_version(model_dir: Path) -> int:
    """One above every numbered directory of the model (complete or not)."""
    numbers = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(numbers, default=0) + 1


def retrain(model_dir: Path) -> Path:
    """Fit on training plus recent rows; publish the next version; return its model.onnx path."""
    x_train, y_train, _ = load_split(model_dir / "data" / "train.npz")
    recent = model_dir / "data" / RECENT_FILENAME
    if recent.is_file():
        with np.load(recent) as npz:
            x_recent, y_recent = npz["X"].astype(np.float32), npz["y"].astype(np.int64)
        x = np.concatenate([x_train, x_recent])
        y = np.concatenate([y_train, y_recent])
    else:
        x, y = x_train, y_train
    pipeline = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(C=1.0, max_iter=5000))])
    pipeline.fit(x, y)
    model_bytes = _export(pipeline)
    _verify(model_bytes, pipeline, x[:256], str(model_dir))
    version = next_version(model_dir)
    target = model_dir / str(version) / "model.onnx"
    write_atomic(target, model_bytes)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True, help="the model's directory in the repository")
    args = parser.parse_args(argv)
    alert = sys.stdin.read() if not sys.stdin.isatty() else ""
    payload = json.loads(alert) if alert.strip().startswith("{") else {}
    features = sorted({str(item.get("feature")) for item in payload.get("alerting", [])})
    target = retrain(args.model_dir)
    print(f"retrained on recent data after drift in {features or 'the model'}; published {target}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
