"""Micro-benchmarks: preprocessing 30 raw features by Numba, fused ONNX and NumPy.

Run::

    python -m pytest benchmarks/micro/test_bench_preprocessing.py --benchmark-only \\
        -p no:cacheprovider --benchmark-json benchmarks/results/preprocessing.json

Groups, per batch size (1, 32, 1024):

* ``pre-<n>``: preprocessing alone. Numba ``transform``, the NumPy oracle, and the graph alone
  in ONNX Runtime (fused in front of an identity model, so one ORT call with nothing else).
* ``validate-<n>``: the per-request check (Numba kernel vs NumPy).
* ``served-<n>``: what a batch costs on the serving path with a logistic regression behind it:
  Numba ``transform`` then ORT on the model, against one ORT call on the fused model.
* ``overhead``: the Numba wrapper at 0 rows (argument checks, dispatch, allocation): the call
  overhead that the batch-32 cost is compared against.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from driftserve.core.preprocessing import (
    NumpyPreprocessor,
    PreprocessingSpec,
    compile_preprocessor,
    fuse_into_model,
    parse_spec,
)

N_FEATURES = 30
BATCHES = (1, 32, 1024)
BENCH = {"min_rounds": 50, "max_time": 0.3, "warmup": True}


def _spec() -> PreprocessingSpec:
    """A breast-cancer-like mix: skewed measurements, plain ones, a code, an id and a bucket."""
    features = [f"x{i}" for i in range(N_FEATURES)]
    steps: list[dict[str, Any]] = []
    for i, name in enumerate(features[:27]):
        if i < 10:
            ops: list[Any] = [
                {"impute": {"value": 1.0}},
                {"clip": {"min": 0.0}},
                "log1p",
                {"standardize": {"mean": 1.0, "std": 0.5}},
            ]
        elif i < 20:
            ops = [{"clip": {"min": 0.0}}, "log1p", {"standardize": {"mean": 0.7, "std": 0.3}}]
        else:
            ops = [{"minmax": {"min": -3.0, "max": 3.0}}]
        steps.append({"feature": name, "ops": ops})
    steps.append({"feature": "x27", "ops": [{"onehot": {"categories": 4}}]})
    steps.append({"feature": "x28", "ops": [{"hash": {"buckets": 8, "seed": 5}}]})
    steps.append({"feature": "x29", "ops": [{"bucketize": {"boundaries": [-1.0, 0.0, 1.0]}}]})
    return parse_spec({"backend": "onnx", "input": {"name": "raw", "features": features}, "steps": steps})


SPEC = _spec()


def _batch(rows: int) -> np.ndarray:
    rng = np.random.default_rng(rows)
    x = rng.exponential(2.0, (rows, N_FEATURES)).astype(np.float32)
    x[:, 20:27] = rng.normal(size=(rows, 7))
    x[:, 27] = rng.integers(0, 6, rows)
    x[:, 28] = rng.integers(0, 10**6, rows)
    x[:, 29] = rng.normal(size=rows)
    x[::7, 3] = np.nan
    return x


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _model(width: int, identity: bool) -> onnx.ModelProto:
    """Identity (to time the graph alone) or a logistic regression on the preprocessed width."""
    rng = np.random.default_rng(0)
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", width])
    if identity:
        nodes = [helper.make_node("Identity", ["input"], ["out"])]
        out, inits = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", width]), []
    else:
        w = rng.normal(size=(width, 2)).astype(np.float32)
        inits = [onnx.numpy_helper.from_array(w, "w"), onnx.numpy_helper.from_array(np.zeros(2, np.float32), "b")]
        nodes = [
            helper.make_node("Gemm", ["input", "w", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["out"], axis=1),
        ]
        out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 2])
    model = helper.make_model(
        helper.make_graph(nodes, "m", [inp], [out], initializer=inits), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def backends() -> dict[str, Any]:
    numba = compile_preprocessor(SPEC)
    classifier = _model(SPEC.output_width, identity=False)
    return {
        "numba": numba,
        "numpy": NumpyPreprocessor(SPEC),
        "onnx_graph": _session(fuse_into_model(SPEC, _model(SPEC.output_width, identity=True))),
        "model": _session(classifier),
        "fused": _session(fuse_into_model(SPEC, classifier)),
    }


@pytest.mark.benchmark(**BENCH)
@pytest.mark.parametrize("rows", BATCHES)
@pytest.mark.parametrize("backend", ["numba", "numpy", "onnx_graph"])
def test_preprocess(benchmark: Any, backends: dict[str, Any], backend: str, rows: int) -> None:
    x = _batch(rows)
    benchmark.group = f"pre-{rows}"
    benchmark.extra_info["rows"] = rows
    if backend == "onnx_graph":
        sess = backends[backend]
        out = benchmark(sess.run, ["out"], {"raw": x})[0]
    else:
        out = benchmark(backends[backend].transform, x)
    np.testing.assert_allclose(out, backends["numpy"].transform(x), rtol=1e-6, atol=1e-6)


@pytest.mark.benchmark(**BENCH)
@pytest.mark.parametrize("rows", BATCHES)
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_validate(benchmark: Any, backends: dict[str, Any], backend: str, rows: int) -> None:
    benchmark.group = f"validate-{rows}"
    benchmark.extra_info["rows"] = rows
    benchmark(backends[backend].validate, _batch(rows))


@pytest.mark.benchmark(**BENCH)
@pytest.mark.parametrize("rows", BATCHES)
@pytest.mark.parametrize("path", ["numba_then_ort", "fused_ort"])
def test_served(benchmark: Any, backends: dict[str, Any], path: str, rows: int) -> None:
    x = _batch(rows)
    benchmark.group = f"served-{rows}"
    benchmark.extra_info["rows"] = rows
    numba, model, fused = backends["numba"], backends["model"], backends["fused"]
    if path == "numba_then_ort":
        out = benchmark(lambda: model.run(["out"], {"input": numba.transform(x)})[0])
    else:
        out = benchmark(fused.run, ["out"], {"raw": x})[0]
    assert out.shape == (rows, 2)


@pytest.mark.benchmark(**BENCH)
def test_numba_call_overhead(benchmark: Any, backends: dict[str, Any]) -> None:
    benchmark.group = "overhead"
    benchmark.extra_info["rows"] = 0
    assert benchmark(backends["numba"].transform, _batch(0)).shape == (0, SPEC.output_width)
