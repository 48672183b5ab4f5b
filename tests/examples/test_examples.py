"""The example repository builder: layout, ONNX signatures, accuracy, determinism, idempotency."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml

from driftserve.core.config import load_model_config
from examples.build_repository import build_repository, load_split

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPECTED_VERSIONS = {"breast_cancer_lr": {1, 2}, "breast_cancer_mlp": {1}}
MODEL_VERSIONS = [(name, v) for name, vs in EXPECTED_VERSIONS.items() for v in sorted(vs)]
CONFIG_KEYS = {
    "platform",
    "max_batch_size",
    "version_policy",
    "instances",
    "runtime",
    "batching",
    "deployment",
    "drift",
}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("repo") / "repository")


@pytest.fixture(scope="module")
def second_build(tmp_path_factory: pytest.TempPathFactory, repository: Path) -> Path:
    """A second build through the CLI in a fresh process with another hash seed.

    skl2onnx gathers opsets in a set, so a build that is only stable within one process would
    pass an in-process comparison and still differ between runs.
    """
    out = tmp_path_factory.mktemp("repo2") / "repository"
    seed = "1" if os.environ.get("PYTHONHASHSEED") != "1" else "2"
    subprocess.run(
        [sys.executable, "-W", "error", "-m", "examples.build_repository", "--out", str(out)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONHASHSEED": seed},
        check=True,
        capture_output=True,
        timeout=110,
    )
    return out


def _files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


def _mtimes(root: Path) -> dict[str, int]:
    return {rel: p.stat().st_mtime_ns for rel, p in _files(root).items()}


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _dims(value_info: onnx.ValueInfoProto) -> list[int | None]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


def test_layout_has_expected_models_and_versions(repository: Path) -> None:
    preprocessed = {"breast_cancer_prep", "breast_cancer_prep_onnx"}
    assert {p.name for p in repository.iterdir()} == set(EXPECTED_VERSIONS) | preprocessed
    for name in EXPECTED_VERSIONS:
        assert (repository / name / "data" / "profile.json").is_file(), "drift reference profile"
    for name, versions in EXPECTED_VERSIONS.items():
        model_dir = repository / name
        found = {int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()}
        assert found == versions
        for v in versions:
            assert (model_dir / str(v) / "model.onnx").is_file()
        assert (model_dir / "config.yaml").is_file()
        assert {p.name for p in (model_dir / "data").iterdir()} == {"train.npz", "holdout.npz", "profile.json"}
    assert not [p for p in repository.rglob("*tmp*")], "temporary files left behind"


@pytest.mark.parametrize("name", sorted(EXPECTED_VERSIONS))
def test_config_has_only_the_schema_keys(repository: Path, name: str) -> None:
    text = (repository / name / "config.yaml").read_text()
    assert text.startswith(f"# {name}: ")
    load_model_config(repository / name)  # the server's strict loader accepts it
    config = yaml.safe_load(text)
    assert set(config) <= CONFIG_KEYS
    assert config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == 64
    assert config["version_policy"] == {"latest": {"num_versions": len(EXPECTED_VERSIONS[name])}}
    assert config["runtime"] == {"intra_op_threads": 1, "inter_op_threads": 1}
    assert config["batching"]["enabled"] is True


def test_splits_are_stratified_float32_with_feature_names(repository: Path) -> None:
    data = repository / "breast_cancer_lr" / "data"
    x_train, y_train, names = load_split(data / "train.npz")
    x_hold, y_hold, names_hold = load_split(data / "holdout.npz")
    assert x_train.dtype == np.float32 and x_hold.dtype == np.float32
    assert y_train.dtype == np.int64 and y_hold.dtype == np.int64
    assert x_train.shape == (426, 30) and x_hold.shape == (143, 30)
    assert y_train.shape == (426,) and y_hold.shape == (143,)
    assert names.shape == (30,) and names[0] == "mean_radius" and not any(" " in n for n in names)
    np.testing.assert_array_equal(names, names_hold)
    assert abs(y_train.mean() - y_hold.mean()) < 0.01
    # Both models share one split, so drift references agree across models.
    x_mlp, y_mlp, _ = load_split(repository / "breast_cancer_mlp" / "data" / "holdout.npz")
    np.testing.assert_array_equal(x_mlp, x_hold)
    np.testing.assert_array_equal(y_mlp, y_hold)


@pytest.mark.parametrize(("name", "version"), MODEL_VERSIONS)
def test_onnx_signature(repository: Path, name: str, version: int) -> None:
    model = onnx.load(str(repository / name / str(version) / "model.onnx"))
    onnx.checker.check_model(model)
    (inp,) = model.graph.input
    assert inp.name == "input"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert _dims(inp) == [None, 30]
    outputs = {o.name: o for o in model.graph.output}
    assert list(outputs) == ["label", "probabilities"]
    assert outputs["label"].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert _dims(outputs["label"]) == [None]
    assert outputs["probabilities"].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert _dims(outputs["probabilities"]) == [None, 2]


@pytest.mark.parametrize(("name", "version"), MODEL_VERSIONS)
def test_holdout_accuracy_through_onnxruntime(repository: Path, name: str, version: int) -> None:
    x, y, _ = load_split(repository / name / "data" / "holdout.npz")
    session = _session(repository / name / str(version) / "model.onnx")
    labels, probabilities = session.run(None, {"input": x})
    assert labels.dtype == np.int64 and labels.shape == (len(x),)
    assert probabilities.dtype == np.float32 and probabilities.shape == (len(x), 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(labels, probabilities.argmax(axis=1))
    assert np.mean(labels == y) >= 0.9


def test_lr_versions_differ(repository: Path) -> None:
    x, _, _ = load_split(repository / "breast_cancer_lr" / "data" / "holdout.npz")
    _, p1 = _session(repository / "breast_cancer_lr" / "1" / "model.onnx").run(None, {"input": x})
    _, p2 = _session(repository / "breast_cancer_lr" / "2" / "model.onnx").run(None, {"input": x})
    assert np.max(np.abs(p1 - p2)) > 0.05


def test_build_is_byte_deterministic(repository: Path, second_build: Path) -> None:
    first, second = _files(repository), _files(second_build)
    assert first.keys() == second.keys()
    for rel, path in first.items():
        assert path.read_bytes() == second[rel].read_bytes(), rel


def test_rerun_without_force_keeps_files(second_build: Path) -> None:
    before = _mtimes(second_build)
    subprocess.run(
        [sys.executable, "-m", "examples.build_repository", "--out", str(second_build)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert _mtimes(second_build) == before


def test_incomplete_model_is_rebuilt_alone(repository: Path, second_build: Path) -> None:
    lr_v2 = Path("breast_cancer_lr") / "2" / "model.onnx"
    (second_build / lr_v2).unlink()
    mlp_before = _mtimes(second_build / "breast_cancer_mlp")
    build_repository(second_build)
    assert (second_build / lr_v2).read_bytes() == (repository / lr_v2).read_bytes()
    assert _mtimes(second_build / "breast_cancer_mlp") == mlp_before
