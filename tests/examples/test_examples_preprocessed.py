"""The preprocessed example models: layout, config, and serving through both backends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml

from driftserve.core.preprocessing import PreparedModel, PreprocessingError, parse_spec, prepare_model
from examples.build_preprocessed import MODEL_NAMES, build_preprocessed_models

CONFIG_KEYS = {"platform", "max_batch_size", "version_policy", "instances", "runtime", "batching", "preprocessing"}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("repository")
    build_preprocessed_models(out)
    return out


def _load(model_dir: Path) -> tuple[dict, PreparedModel, ort.InferenceSession]:
    config = yaml.safe_load((model_dir / "config.yaml").read_text())
    spec = parse_spec(config["preprocessing"], source=str(model_dir / "config.yaml"))
    prepared = prepare_model(spec, onnx.load(model_dir / "1" / "model.onnx"))
    sess = ort.InferenceSession(prepared.model.SerializeToString(), providers=["CPUExecutionProvider"])
    return config, prepared, sess


def _predict(prepared: PreparedModel, sess: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    prepared.validator.validate(x)
    if prepared.preprocessor is None:  # fused: ORT takes the raw rows
        return sess.run(["probabilities"], {prepared.raw_input_name: x})[0]
    features = prepared.preprocessor.transform(x)
    return sess.run(["probabilities"], {prepared.model_input_name: features})[0]


def test_layout_and_config(repository: Path) -> None:
    for backend, name in MODEL_NAMES.items():
        model_dir = repository / name
        config = yaml.safe_load((model_dir / "config.yaml").read_text())
        assert set(config) == CONFIG_KEYS
        assert config["platform"] == "onnxruntime_onnx" and config["max_batch_size"] == 64
        assert config["version_policy"] == {"latest": {"num_versions": 1}}
        assert config["batching"] == {"enabled": True, "max_queue_delay_us": 200, "max_queue_size": 1024}
        assert config["preprocessing"]["backend"] == backend
        with np.load(model_dir / "data" / "train.npz") as train, np.load(model_dir / "data" / "holdout.npz") as holdout:
            assert train["X"].dtype == np.float32 and train["X"].shape == (426, 31)
            assert holdout["X"].shape == (143, 31) and holdout["y"].dtype == np.int64
            assert list(train["feature_names"][-2:]) == ["worst_fractal_dimension", "size_class"]
            assert set(np.unique(train["X"][:, -1])) == {0.0, 1.0, 2.0, 3.0}
        model = onnx.load(model_dir / "1" / "model.onnx")
        spec = parse_spec(config["preprocessing"])
        assert model.graph.input[0].type.tensor_type.shape.dim[1].dim_value == spec.output_width


def test_both_backends_serve_the_same_accurate_predictions(repository: Path) -> None:
    with np.load(repository / MODEL_NAMES["numba"] / "data" / "holdout.npz") as holdout:
        x, y = holdout["X"], holdout["y"]
    results = {}
    for backend, name in MODEL_NAMES.items():
        _, prepared, sess = _load(repository / name)
        assert (prepared.preprocessor is None) == (backend == "onnx")
        results[backend] = _predict(prepared, sess, x)
    np.testing.assert_allclose(results["numba"], results["onnx"], rtol=1e-5, atol=1e-6)
    assert np.mean(results["numba"].argmax(axis=1) == y) >= 0.95


def test_client_errors_and_unseen_categories(repository: Path) -> None:
    with np.load(repository / MODEL_NAMES["onnx"] / "data" / "holdout.npz") as holdout:
        x, names = holdout["X"][:4].copy(), list(holdout["feature_names"])
    for name in MODEL_NAMES.values():
        _, prepared, sess = _load(repository / name)
        missing_mean = x.copy()
        missing_mean[1, names.index("mean_texture")] = np.nan  # mean_* features impute
        assert _predict(prepared, sess, missing_mean).shape == (4, 2)
        unseen = x.copy()
        unseen[2, names.index("size_class")] = 9.0  # goes to the unknown slot
        assert np.isfinite(_predict(prepared, sess, unseen)).all()
        bad = x.copy()
        bad[3, names.index("worst_area")] = np.nan
        with pytest.raises(PreprocessingError, match=r"feature 'worst_area' \(column 23\) has NaN in row 3"):
            prepared.validator.validate(bad)
        with pytest.raises(PreprocessingError, match="has 30 features per row, expected 31"):
            prepared.validator.validate(x[:, :30])


def test_rebuild_skips_complete_models_and_force_is_deterministic(repository: Path) -> None:
    files = sorted(p for p in repository.rglob("*") if p.is_file())
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    assert build_preprocessed_models(repository) == [repository / n for n in MODEL_NAMES.values()]
    assert {p: p.stat().st_mtime_ns for p in files} == {p: v[0] for p, v in before.items()}
    build_preprocessed_models(repository, force=True)
    assert {p: p.read_bytes() for p in files} == {p: v[1] for p, v in before.items()}
