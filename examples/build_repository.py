"""Build the example model repository from a dataset scikit-learn ships (no downloads).

Usage::

    python -m examples.build_repository --out examples/repository [--force]

Layout written (Triton-like, what the server's loader reads)::

    <out>/breast_cancer_lr/{config.yaml, 1/model.onnx, 2/model.onnx, data/{train,holdout}.npz}
    <out>/breast_cancer_mlp/{config.yaml, 1/model.onnx, data/{train,holdout}.npz}
    <out>/breast_cancer_prep{,_onnx}/...   (raw features + compiled preprocessing; see
                                            examples.build_preprocessed)

Each model with a ``drift:`` section also gets ``data/profile.json``, its drift reference profile
(training rows and the served version's outputs on them).

Every model is trained with fixed seeds, exported with a fixed opset and checked against
scikit-learn through ONNX Runtime before it is written. Files are written atomically (temporary
file, then rename), so an interrupted build never leaves half a model; a model whose files all
exist is skipped unless ``force`` is set, so re-running is cheap.
"""

from __future__ import annotations

import argparse
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, Int64TensorType
from sklearn.base import BaseEstimator
from sklearn.datasets import load_breast_cancer
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from examples.build_preprocessed import build_preprocessed_models
from examples.files import npz_bytes as _npz_bytes
from examples.files import write_atomic as _write_atomic

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path("examples/repository")
N_FEATURES = 30
SPLIT_SEED = 0
TEST_SIZE = 0.25
# Pinned so that the exported graphs do not change with the installed converter's defaults.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 1}
INPUT_NAME = "input"
LABEL_OUTPUT = "label"
PROBABILITIES_OUTPUT = "probabilities"
MIN_LABEL_AGREEMENT = 0.99
MAX_PROBABILITY_DIFF = 1e-4
_PARTS = ("train", "holdout")
PROFILE_FILENAME = "profile.json"
PROFILE_BINS = 1000

_LR_CONFIG = """\
# breast_cancer_lr: standardized logistic regression; v1 C=1.0, v2 C=0.1 (stronger L2); both served.
# Requests without a version go to v2; the drift sidecar runs v1 as a shadow on mirrored inputs.
platform: onnxruntime_onnx
max_batch_size: 64
version_policy:
  latest: {num_versions: 2}
instances: 1
runtime:
  intra_op_threads: 1
  inter_op_threads: 1
batching:
  enabled: true
  max_queue_delay_us: 0      # batches still form while a batch computes; no added latency
  max_queue_size: 1024
deployment:
  served_version: 2
  shadow_version: 1
drift:
  reference: data/profile.json
  mirror: {sample_rate: 1.0}
"""

_MLP_CONFIG = """\
# breast_cancer_mlp: 30 -> 1024 -> 1024 -> 2 MLP; large enough that micro-batching pays.
platform: onnxruntime_onnx
max_batch_size: 64
version_policy:
  latest: {num_versions: 1}
instances: 1
runtime:
  intra_op_threads: 1
  inter_op_threads: 1
batching:
  enabled: true
  max_queue_delay_us: 500
  preferred_batch_sizes: [32, 64]
  max_queue_size: 1024
drift:
  reference: data/profile.json
  mirror: {sample_rate: 0.5}
"""


def _logistic_regression(c: float) -> Callable[[], BaseEstimator]:
    return lambda: LogisticRegression(C=c, max_iter=5000)


def _mlp() -> BaseEstimator:
    # Few epochs on purpose: the model exists to cost compute at serving time, not to be best.
    return MLPClassifier(hidden_layer_sizes=(1024, 1024), random_state=0, max_iter=40, early_stopping=False)


@dataclass(frozen=True)
class _ModelSpec:
    """One model of the repository: its config text and a classifier factory per version."""

    name: str
    config_yaml: str
    versions: dict[int, Callable[[], BaseEstimator]]


MODELS: tuple[_ModelSpec, ...] = (
    _ModelSpec(
        "breast_cancer_lr",
        _LR_CONFIG,
        {1: _logistic_regression(1.0), 2: _logistic_regression(0.1)},
    ),
    _ModelSpec("breast_cancer_mlp", _MLP_CONFIG, {1: _mlp}),
)


@dataclass(frozen=True)
class _Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_holdout: np.ndarray
    y_holdout: np.ndarray
    feature_names: np.ndarray


def _load_split() -> _Split:
    """The seeded, stratified split; float32 from the start so sklearn sees what ORT will see."""
    data = load_breast_cancer()
    x = np.asarray(data.data, dtype=np.float32)
    y = np.asarray(data.target, dtype=np.int64)
    names = np.array([str(n).replace(" ", "_") for n in data.feature_names])
    x_train, x_holdout, y_train, y_holdout = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=y
    )
    return _Split(x_train, y_train, x_holdout, y_holdout, names)


def load_split(path: Path | str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a ``data/*.npz`` file: ``(X float32 [n, 30], y int64 [n], feature_names str [30])``."""
    with np.load(path, allow_pickle=False) as npz:
        return npz["X"], npz["y"], npz["feature_names"]


def _export(pipeline: Pipeline) -> bytes:
    """Convert to ONNX with pinned opsets and the output names the server's clients expect."""
    clf = pipeline.steps[-1][1]
    onx = to_onnx(
        pipeline,
        initial_types=[(INPUT_NAME, FloatTensorType([None, N_FEATURES]))],
        final_types=[
            (LABEL_OUTPUT, Int64TensorType([None])),
            (PROBABILITIES_OUTPUT, FloatTensorType([None, 2])),
        ],
        target_opset=TARGET_OPSET,
        options={id(clf): {"zipmap": False}},
    )
    # skl2onnx collects opsets in a set, so their order follows PYTHONHASHSEED; sort them so
    # that builds are byte-identical across processes.
    opsets = sorted(onx.opset_import, key=lambda o: o.domain)
    del onx.opset_import[:]
    onx.opset_import.extend(opsets)
    return onx.SerializeToString()


def _verify(model_bytes: bytes, pipeline: Pipeline, x: np.ndarray, where: str) -> float:
    """Check the ONNX graph against sklearn on the holdout; raise if they disagree."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    labels, probabilities = session.run([LABEL_OUTPUT, PROBABILITIES_OUTPUT], {INPUT_NAME: x})
    agreement = float(np.mean(labels == pipeline.predict(x)))
    prob_diff = float(np.max(np.abs(probabilities - pipeline.predict_proba(x))))
    if agreement < MIN_LABEL_AGREEMENT or prob_diff > MAX_PROBABILITY_DIFF:
        raise RuntimeError(
            f"{where}: ONNX export disagrees with scikit-learn on the holdout "
            f"(label agreement {agreement:.4f} < {MIN_LABEL_AGREEMENT} "
            f"or max probability difference {prob_diff:.2e} > {MAX_PROBABILITY_DIFF})"
        )
    return prob_diff


def _model_files(model_dir: Path, spec: _ModelSpec) -> list[Path]:
    files = [model_dir / "config.yaml", model_dir / "data" / PROFILE_FILENAME]
    files += [model_dir / "data" / f"{p}.npz" for p in _PARTS]
    return files + [model_dir / str(v) / "model.onnx" for v in spec.versions]


def _build_model(model_dir: Path, spec: _ModelSpec, split: _Split) -> None:
    """Train, export and verify every version, then write data, versions and config last."""
    for version, make_classifier in spec.versions.items():
        where = f"{spec.name}/{version}"
        pipeline = Pipeline([("scaler", StandardScaler()), ("clf", make_classifier())])
        with warnings.catch_warnings():
            # The MLP is trained for a few epochs on purpose; its ConvergenceWarning is expected.
            warnings.simplefilter("ignore", ConvergenceWarning)
            pipeline.fit(split.x_train, split.y_train)
        model_bytes = _export(pipeline)
        prob_diff = _verify(model_bytes, pipeline, split.x_holdout, where)
        accuracy = float(np.mean(pipeline.predict(split.x_holdout) == split.y_holdout))
        _write_atomic(model_dir / str(version) / "model.onnx", model_bytes)
        logger.info(
            "built %s: holdout accuracy %.4f, max |p_onnx - p_sklearn| %.1e, %d bytes",
            where,
            accuracy,
            prob_diff,
            len(model_bytes),
        )
    parts = {"train": (split.x_train, split.y_train), "holdout": (split.x_holdout, split.y_holdout)}
    for part, (x, y) in parts.items():
        payload = _npz_bytes({"X": x, "y": y, "feature_names": split.feature_names})
        _write_atomic(model_dir / "data" / f"{part}.npz", payload)
    _write_reference_profile(model_dir, max(spec.versions))
    _write_atomic(model_dir / "config.yaml", spec.config_yaml.encode())


def _write_reference_profile(model_dir: Path, version: int) -> None:
    """The drift reference: the training rows and the served version's outputs on them."""
    from driftserve.sidecar.drift.profile import profile_command

    tmp = model_dir / "data" / f".{PROFILE_FILENAME}.tmp-{os.getpid()}"
    try:
        profile_command(
            data=model_dir / "data" / "train.npz",
            out=tmp,
            categorical=[],
            bins=PROFILE_BINS,
            outputs_from_model=model_dir / str(version) / "model.onnx",
        )
        os.replace(tmp, model_dir / "data" / PROFILE_FILENAME)
    finally:
        tmp.unlink(missing_ok=True)


def build_repository(out: Path, force: bool = False) -> Path:
    """Build every example model under ``out``; complete models are kept unless ``force``."""
    out = Path(out)
    split: _Split | None = None
    for spec in MODELS:
        model_dir = out / spec.name
        if not force and all(p.is_file() for p in _model_files(model_dir, spec)):
            logger.info("%s is complete in %s; skipping (--force rebuilds)", spec.name, model_dir)
            continue
        split = split or _load_split()
        _build_model(model_dir, spec, split)
    build_preprocessed_models(out, force=force)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="repository root (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="rebuild models that are already complete")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    build_repository(args.out, force=args.force)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
