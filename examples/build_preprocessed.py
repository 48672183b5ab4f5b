"""Example models served with compiled preprocessing, built from scikit-learn's breast cancer data.

Usage::

    python -m examples.build_preprocessed --out examples/repository [--force]

Two models with the same preprocessing and classifier, one per backend::

    <out>/breast_cancer_prep/        backend numba: kernel before ORT
    <out>/breast_cancer_prep_onnx/   backend onnx: graph fused in front of the model at load
        config.yaml, 1/model.onnx, data/{train,holdout}.npz

Clients send the 31 raw columns (the 30 measurements plus ``size_class``, an integer code 0..3
derived from ``mean_area``); ``model.onnx`` itself takes the transformed columns. Statistics
are fitted on the training rows with :func:`driftserve.core.preprocessing.fit_spec`. The ``mean_*``
features impute missing values, the others refuse them; ``size_class`` is one-hot encoded with
an unknown slot and ``mean_concavity`` is also bucketized by quartiles.
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import yaml
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, Int64TensorType
from sklearn.datasets import load_breast_cancer
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from driftserve.core.preprocessing import (
    NumpyPreprocessor,
    PreprocessingSpec,
    compile_preprocessor,
    fit_spec,
    fuse_into_model,
)
from examples.files import npz_bytes as _npz_bytes
from examples.files import write_atomic as _write_atomic

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path("examples/repository")
MODEL_NAMES = {"numba": "breast_cancer_prep", "onnx": "breast_cancer_prep_onnx"}
SPLIT_SEED = 0
TEST_SIZE = 0.25
TARGET_OPSET = {"": 17, "ai.onnx.ml": 1}
INPUT_NAME = "input"
LABEL_OUTPUT = "label"
PROBABILITIES_OUTPUT = "probabilities"
#: ``size_class`` = number of these ``mean_area`` edges <= the value: codes 0..3.
SIZE_CLASS_EDGES = (500.0, 800.0, 1200.0)
SIZE_CLASS_FEATURE = "size_class"
MIN_LABEL_AGREEMENT = 0.99
MAX_PROBABILITY_DIFF = 1e-4
_PARTS = ("train", "holdout")

_CONFIG_HEADER = """\
# {name}: logistic regression on preprocessed breast cancer features (backend {backend}).
# Clients send the 31 raw columns; preprocessing statistics were fitted on data/train.npz.
platform: onnxruntime_onnx
max_batch_size: 64
version_policy:
  latest: {{num_versions: 1}}
instances: 1
runtime:
  intra_op_threads: 1
  inter_op_threads: 1
batching:
  enabled: true
  max_queue_delay_us: 200
  max_queue_size: 1024
"""


def _load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Raw float32 rows with the derived ``size_class`` column, split like the other examples."""
    data = load_breast_cancer()
    names = [str(n).replace(" ", "_") for n in data.feature_names]
    x = np.asarray(data.data, dtype=np.float32)
    size_class = np.searchsorted(SIZE_CLASS_EDGES, x[:, names.index("mean_area")], side="right")
    x = np.column_stack([x, size_class.astype(np.float32)])
    y = np.asarray(data.target, dtype=np.int64)
    x_train, x_holdout, y_train, y_holdout = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=y
    )
    return x_train, y_train, x_holdout, y_holdout, np.array([*names, SIZE_CLASS_FEATURE])


def spec_template(feature_names: list[str], backend: str) -> dict[str, Any]:
    """The preprocessing before fitting: which ops each feature gets, statistics left out."""
    steps: list[dict[str, Any]] = []
    for name in feature_names:
        if name == SIZE_CLASS_FEATURE:
            steps.append({"feature": name, "ops": [{"onehot": {}}]})
        elif name.startswith("mean_"):
            ops = [{"impute": {"strategy": "mean"}}, {"clip": {"min": 0.0}}, "log1p", {"standardize": {}}]
            steps.append({"feature": name, "ops": ops})
        elif name.endswith("_error"):
            steps.append({"feature": name, "ops": [{"clip": {"min": 0.0}}, "log1p", {"standardize": {}}]})
        else:
            steps.append({"feature": name, "ops": [{"standardize": {}}]})
    steps.append({"feature": "mean_concavity", "ops": [{"bucketize": {"n_buckets": 4}}]})
    return {
        "backend": backend,
        "input": {"name": INPUT_NAME, "datatype": "FP32", "features": feature_names},
        "steps": steps,
    }


def _train(features: np.ndarray, y: np.ndarray) -> tuple[LogisticRegression, onnx.ModelProto]:
    with warnings.catch_warnings():
        # lbfgs converges on these standardized features; the filter guards other sklearn builds.
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(C=1.0, max_iter=5000).fit(features, y)
    model = to_onnx(
        clf,
        initial_types=[(INPUT_NAME, FloatTensorType([None, features.shape[1]]))],
        final_types=[(LABEL_OUTPUT, Int64TensorType([None])), (PROBABILITIES_OUTPUT, FloatTensorType([None, 2]))],
        target_opset=TARGET_OPSET,
        options={id(clf): {"zipmap": False}},
    )
    # skl2onnx's opset order follows set iteration; sort for byte-identical builds.
    opsets = sorted(model.opset_import, key=lambda o: o.domain)
    del model.opset_import[:]
    model.opset_import.extend(opsets)
    return clf, model


def _serve(spec: PreprocessingSpec, model: onnx.ModelProto, x_raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predict the way the server will: kernel then model, or the fused model on raw rows."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    if spec.backend == "onnx":
        model, feed = fuse_into_model(spec, model), x_raw
    else:
        pre = compile_preprocessor(spec)
        pre.validate(x_raw)
        feed = pre.transform(x_raw)
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    labels, probabilities = sess.run([LABEL_OUTPUT, PROBABILITIES_OUTPUT], {INPUT_NAME: feed})
    return labels, probabilities


def _model_files(model_dir: Path) -> list[Path]:
    return [model_dir / "config.yaml", model_dir / "1" / "model.onnx"] + [
        model_dir / "data" / f"{p}.npz" for p in _PARTS
    ]


def build_preprocessed_models(out: Path, force: bool = False) -> list[Path]:
    """Build both preprocessed models under ``out``; complete ones are kept unless ``force``."""
    out = Path(out)
    dirs = {backend: out / name for backend, name in MODEL_NAMES.items()}
    todo = [b for b, d in dirs.items() if force or not all(p.is_file() for p in _model_files(d))]
    for backend in sorted(set(dirs) - set(todo)):
        logger.info("%s is complete in %s; skipping (--force rebuilds)", MODEL_NAMES[backend], dirs[backend])
    if not todo:
        return list(dirs.values())
    x_train, y_train, x_holdout, y_holdout, names = _load_split()
    base = fit_spec(x_train, list(names), spec_template(list(names), "numba"))
    clf, model = _train(NumpyPreprocessor(base).transform(x_train), y_train)
    expected_labels = clf.predict(NumpyPreprocessor(base).transform(x_holdout))
    expected_probabilities = clf.predict_proba(NumpyPreprocessor(base).transform(x_holdout))
    for backend in todo:
        name, model_dir = MODEL_NAMES[backend], dirs[backend]
        spec = base.model_copy(update={"backend": backend})
        labels, probabilities = _serve(spec, model, x_holdout)
        agreement = float(np.mean(labels == expected_labels))
        prob_diff = float(np.max(np.abs(probabilities - expected_probabilities)))
        if agreement < MIN_LABEL_AGREEMENT or prob_diff > MAX_PROBABILITY_DIFF:
            raise RuntimeError(
                f"{name}: served predictions disagree with scikit-learn on the holdout "
                f"(label agreement {agreement:.4f}, max probability difference {prob_diff:.2e})"
            )
        for part, (x, y) in {"train": (x_train, y_train), "holdout": (x_holdout, y_holdout)}.items():
            _write_atomic(model_dir / "data" / f"{part}.npz", _npz_bytes({"X": x, "y": y, "feature_names": names}))
        _write_atomic(model_dir / "1" / "model.onnx", model.SerializeToString())
        config = _CONFIG_HEADER.format(name=name, backend=backend) + yaml.safe_dump(
            {"preprocessing": spec.to_config()}, sort_keys=False, width=100
        )
        _write_atomic(model_dir / "config.yaml", config.encode())
        logger.info(
            "built %s: %d raw -> %d model columns, holdout accuracy %.4f, max |p - p_sklearn| %.1e",
            name,
            len(names),
            spec.output_width,
            float(np.mean(labels == y_holdout)),
            prob_diff,
        )
    return list(dirs.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="repository root (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="rebuild models that are already complete")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    build_preprocessed_models(args.out, force=args.force)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
