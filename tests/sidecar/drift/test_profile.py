"""Reference profiles: building, file round trips, row loaders and output profiling via ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from driftserve.sidecar.drift.profile import ReferenceProfile, build_profile, load_rows, profile_command


def test_build_profile_numeric_categorical_and_missing() -> None:
    rng = np.random.default_rng(0)
    X = np.stack([rng.normal(size=4000), rng.integers(0, 4, 4000).astype(float), rng.normal(size=4000)], axis=1)
    X[:400, 2] = np.nan
    prof = build_profile(X, ["a", "cat", "b"], categorical=["cat"], bins=100)
    a, cat, b = prof.features
    assert a.kind == "numeric" and a.edges.size == 99 and a.counts.sum() == 4000
    assert np.all(np.abs(a.counts - 40) <= 1)  # quantile bins hold equal reference mass
    assert cat.kind == "categorical" and cat.edges.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert b.missing_share == pytest.approx(0.1) and b.counts.sum() == 3600


def test_constant_and_all_missing_columns_profile_without_error() -> None:
    X = np.stack([np.full(50, 3.0), np.full(50, np.nan)], axis=1)
    const, empty = build_profile(X, ["c", "e"]).features
    assert const.counts.tolist() == [0, 50] and const.edges.tolist() == [3.0]
    assert empty.counts.tolist() == [0] and empty.missing_share == 1.0


def test_save_load_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    prof = build_profile(rng.lognormal(size=(500, 3)), ["x", "y", "z"])
    prof.save(tmp_path / "p.json")
    loaded = ReferenceProfile.load(tmp_path / "p.json")
    for before, after in zip(prof.features, loaded.features):
        np.testing.assert_array_equal(before.edges, after.edges)
        np.testing.assert_array_equal(before.counts, after.counts)
    assert loaded.feature_names == ["x", "y", "z"]


def test_load_rejects_foreign_and_corrupt_files(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a drift profile"):
        ReferenceProfile.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("{")
    with pytest.raises(ValueError, match="cannot read drift profile"):
        ReferenceProfile.load(tmp_path / "y.json")
    prof = build_profile(np.arange(10.0).reshape(5, 2), ["a", "b"])
    prof.save(tmp_path / "z.json")
    text = (tmp_path / "z.json").read_text().replace('"n_rows":5', '"n_rows":6', 1)
    (tmp_path / "z.json").write_text(text)
    with pytest.raises(ValueError, match="counts \\+ missing_count must equal n_rows"):
        ReferenceProfile.load(tmp_path / "z.json")


def test_load_rows_csv_npy_npz(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("a,b,c\n1,2,3\n4,,6\n7,NA,9\n")
    X, names = load_rows(tmp_path / "d.csv")
    assert names == ["a", "b", "c"] and X.shape == (3, 3) and np.isnan(X[1:, 1]).all()
    X2, names2 = load_rows(tmp_path / "d.csv", ["c", "a"])
    assert names2 == ["c", "a"] and X2[:, 0].tolist() == [3, 6, 9]
    np.save(tmp_path / "d.npy", np.ones((4, 2), dtype=np.float32))
    assert load_rows(tmp_path / "d.npy", ["p", "q"])[0].shape == (4, 2)
    np.savez(
        tmp_path / "train.npz",
        X=np.zeros((5, 2), np.float32),
        y=np.zeros(5, np.int64),
        feature_names=np.array(["u", "v"]),
    )
    X3, names3 = load_rows(tmp_path / "train.npz")
    assert names3 == ["u", "v"] and X3.dtype == np.float32


def test_load_rows_errors_are_precise(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("a,b\n1,x\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: column 'b' holds 'x', expected a number"):
        load_rows(tmp_path / "bad.csv")
    (tmp_path / "short.csv").write_text("a,b\n1\n")
    with pytest.raises(ValueError, match="1 fields, expected 2"):
        load_rows(tmp_path / "short.csv")
    np.save(tmp_path / "d.npy", np.ones((4, 2)))
    with pytest.raises(ValueError, match="pass feature_names"):
        load_rows(tmp_path / "d.npy")
    np.savez(tmp_path / "d.npz", data=np.ones((2, 2)))
    with pytest.raises(ValueError, match="expected keys 'X' and 'feature_names'"):
        load_rows(tmp_path / "d.npz")
    with pytest.raises(ValueError, match=r"unsupported data file '\.parquet'"):
        load_rows(tmp_path / "d.parquet")
    (tmp_path / "ok.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"features \['zz'\] not in the file's columns"):
        load_rows(tmp_path / "ok.csv", ["zz"])


def test_build_profile_errors() -> None:
    with pytest.raises(ValueError, match="X has 2 columns but 3 feature names"):
        build_profile(np.zeros((3, 2)), ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"categorical features \['q'\] are not among"):
        build_profile(np.zeros((3, 1)), ["a"], categorical=["q"])


def _softmax_model(path: Path, n_features: int) -> np.ndarray:
    """A two-class linear softmax classifier with a float probabilities and an int64 label output."""
    weights = np.random.default_rng(2).normal(size=(n_features, 2)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
        ],
        "clf",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, n_features])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2]),
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
        ],
        [numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return weights


def test_profile_command_adds_output_profiles(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(2000, 4)).astype(np.float32)
    np.savez(tmp_path / "train.npz", X=X, y=np.zeros(2000, np.int64), feature_names=np.array(list("abcd")))
    weights = _softmax_model(tmp_path / "model.onnx", 4)
    prof = profile_command(tmp_path / "train.npz", tmp_path / "out" / "profile.json", [], 100, tmp_path / "model.onnx")
    assert (tmp_path / "out" / "profile.json").exists()
    by_name = {o.name: o for o in prof.outputs}
    assert set(by_name) == {"probabilities[0]", "probabilities[1]", "label"}
    assert by_name["probabilities[1]"].tensor == "probabilities" and by_name["probabilities[1]"].column == 1
    assert by_name["label"].kind == "categorical"
    logits = X @ weights
    expected_ones = int(np.sum(logits[:, 1] > logits[:, 0]))
    label = by_name["label"]
    assert dict(zip(label.edges.tolist(), label.counts.tolist())).get(1.0, 0) == expected_ones
    assert ReferenceProfile.load(tmp_path / "out" / "profile.json").outputs[2].name == "label"


def test_profile_command_reports_model_problems_as_value_errors(tmp_path: Path) -> None:
    np.savez(
        tmp_path / "train.npz",
        X=np.zeros((10, 3), np.float32),
        y=np.zeros(10, np.int64),
        feature_names=np.array(list("abc")),
    )
    _softmax_model(tmp_path / "model.onnx", 4)
    with pytest.raises(ValueError, match="running 3-column training rows failed"):
        profile_command(tmp_path / "train.npz", tmp_path / "p.json", [], 10, tmp_path / "model.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="cannot load the model with ONNX Runtime"):
        profile_command(tmp_path / "train.npz", tmp_path / "p.json", [], 10, tmp_path / "broken.onnx")
