"""Fusing into real models (skl2onnx, ai.onnx.ml domain) and preparing models for serving."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from driftserve.core.preprocessing import (
    NumbaPreprocessor,
    PreprocessingConfigError,
    PreprocessingError,
    PreprocessingSpec,
    build_preprocessing_model,
    compile_preprocessor,
    fuse_into_model,
    parse_spec,
    prepare_model,
)
from tests.core.preprocessing.support import identity_model, session

FEATURES = ["size", "area", "code"]


def _spec(backend: str = "onnx", name: str = "input", datatype: str = "FP32") -> PreprocessingSpec:
    return parse_spec(
        {
            "backend": backend,
            "input": {"name": name, "datatype": datatype, "features": FEATURES},
            "steps": [
                {
                    "feature": "size",
                    "ops": [{"impute": {"value": 1.0}}, "log1p", {"standardize": {"mean": 1.0, "std": 0.5}}],
                },
                {"feature": "area", "ops": [{"clip": {"min": 0.0}}, {"minmax": {"min": 0.0, "max": 10.0}}]},
                {"feature": "code", "ops": [{"onehot": {"categories": 3}}]},
            ],
        }
    )


@pytest.fixture(scope="module")
def classifier() -> onnx.ModelProto:
    """A logistic regression on the 6 preprocessed columns, exported like the examples are."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 3] > 0).astype(np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(max_iter=200).fit(x, y)
    return to_onnx(
        clf,
        initial_types=[("input", FloatTensorType([None, 6]))],
        target_opset={"": 17, "ai.onnx.ml": 1},
        options={id(clf): {"zipmap": False}},
    )


def _raw_batch() -> np.ndarray:
    return np.array([[np.nan, 3.0, 0.0], [2.0, -4.0, 2.0], [0.5, 12.0, 9.0], [7.0, 5.0, 1.0]], np.float32)


def test_fused_model_equals_kernel_then_model(classifier: onnx.ModelProto) -> None:
    spec = _spec()
    fused = fuse_into_model(spec, classifier)
    assert [i.name for i in fused.graph.input] == ["input"]
    assert [o.name for o in fused.graph.output] == [o.name for o in classifier.graph.output]
    assert fused.ir_version == classifier.ir_version
    assert {o.domain: o.version for o in fused.opset_import} == {o.domain: o.version for o in classifier.opset_import}
    x = _raw_batch()
    labels, probabilities = session(fused).run(None, {"input": x})
    features = compile_preprocessor(spec).transform(x)
    ref_labels, ref_probabilities = session(classifier).run(None, {"input": features})
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_allclose(probabilities, ref_probabilities, rtol=1e-6, atol=1e-6)


def test_fusing_leaves_the_original_model_untouched(classifier: onnx.ModelProto) -> None:
    before = classifier.SerializeToString()
    fuse_into_model(_spec(), classifier)
    assert classifier.SerializeToString() == before


def test_width_mismatch_is_a_config_error(classifier: onnx.ModelProto) -> None:
    with pytest.raises(
        PreprocessingConfigError,
        match=r"produces 6 columns but the model input takes 7 \(columns per step: size:1, area:1, code:4\)",
    ):
        fuse_into_model(_spec(), identity_model(7))


def test_model_input_must_be_found() -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["out"])],
        "two_inputs",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 6]) for n in ("a", "b")],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 6])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(PreprocessingConfigError, match=r"model has inputs \['a', 'b'\]; name the one"):
        fuse_into_model(_spec(), model)
    with pytest.raises(PreprocessingConfigError, match=r"model has no input 'c'; its inputs are \['a', 'b'\]"):
        fuse_into_model(_spec(), model, "c")
    fused = fuse_into_model(_spec(), model, "b")
    assert sorted(i.name for i in fused.graph.input) == ["a", "input"]
    x, a = _raw_batch(), np.ones((4, 6), np.float32)
    out = session(fused).run(None, {"input": x, "a": a})[0]
    np.testing.assert_allclose(out, compile_preprocessor(_spec()).transform(x) + 1.0, rtol=1e-6)


def test_raw_name_clashing_with_a_model_tensor_is_rejected(classifier: onnx.ModelProto) -> None:
    taken = classifier.graph.node[0].output[0]
    with pytest.raises(PreprocessingConfigError, match=f"input name '{taken}' is already a tensor"):
        fuse_into_model(_spec(name=taken), classifier)


def test_old_opset_models_are_converted() -> None:
    fused = fuse_into_model(_spec(datatype="FP64"), identity_model(6, opset=11))
    assert {o.domain: o.version for o in fused.opset_import}[""] == 13
    x = _raw_batch().astype(np.float64)
    out = session(fused).run(None, {"input": x})[0]
    np.testing.assert_allclose(out, compile_preprocessor(_spec(datatype="FP64")).transform(x), rtol=1e-6)


def test_model_returning_its_input_keeps_its_output_name() -> None:
    graph = helper.make_graph(
        [],
        "echo",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 6])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    fused = fuse_into_model(_spec(), model)
    assert [o.name for o in fused.graph.output] == ["features"]
    out = session(fused).run(None, {"input": _raw_batch()})[0]
    np.testing.assert_allclose(out, compile_preprocessor(_spec()).transform(_raw_batch()), rtol=1e-6)


def test_standalone_graph_has_the_spec_shape() -> None:
    model = build_preprocessing_model(_spec(), opset=13)
    dims = [d.dim_value or d.dim_param for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 6]
    with pytest.raises(ValueError, match="needs opset >= 13"):
        build_preprocessing_model(_spec(), opset=12)


def test_prepare_model_per_backend(classifier: onnx.ModelProto) -> None:
    prepared = prepare_model(_spec("numba"), classifier)
    assert prepared.model is classifier
    assert isinstance(prepared.preprocessor, NumbaPreprocessor)
    assert (prepared.raw_input_name, prepared.model_input_name) == ("input", "input")
    prepared = prepare_model(_spec("onnx", name="raw"), classifier)
    assert prepared.preprocessor is None
    assert [i.name for i in prepared.model.graph.input] == ["raw"]
    with pytest.raises(PreprocessingError, match=r"feature 'code' \(column 2\) has NaN in row 0"):
        prepared.validator.validate(np.array([[1.0, 1.0, np.nan]], np.float32))
    with pytest.raises(PreprocessingConfigError, match="produces 6 columns but the model input takes 7"):
        prepare_model(_spec("numba"), identity_model(7))


def test_double_and_integer_model_inputs() -> None:
    double_model = identity_model(6)
    double_model.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    double_model.graph.output[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    out = session(fuse_into_model(_spec(), double_model)).run(None, {"input": _raw_batch()})[0]
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, compile_preprocessor(_spec()).transform(_raw_batch()).astype(np.float64))
    int_model = identity_model(6)
    int_model.graph.input[0].type.tensor_type.elem_type = TensorProto.INT64
    with pytest.raises(
        PreprocessingConfigError, match="model input 'input' has type INT64; preprocessing feeds FLOAT or DOUBLE"
    ):
        fuse_into_model(_spec(), int_model)
