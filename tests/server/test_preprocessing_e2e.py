"""Compiled preprocessing through the real server, both backends: raw features in, same predictions
as transforming offline with the NumPy oracle and calling the bare model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from driftserve.core.config import load_model_config
from driftserve.core.preprocessing import NumpyPreprocessor
from examples.build_repository import load_split
from tests.server.support import InProcessServer, v2_request

MODELS = ("breast_cancer_prep", "breast_cancer_prep_onnx")


@pytest.fixture(scope="module")
def server(example_repository: Path) -> Iterator[InProcessServer]:
    with InProcessServer(example_repository) as proc:
        yield proc


@pytest.mark.parametrize("model", MODELS)
def test_raw_features_in_same_predictions_as_offline_transform(
    server: InProcessServer, example_repository: Path, model: str
) -> None:
    model_dir = example_repository / model
    config = load_model_config(model_dir)
    assert config.preprocessing is not None
    assert config.preprocessing.backend == ("onnx" if model.endswith("_onnx") else "numba")
    raw, _, _ = load_split(model_dir / "data" / "holdout.npz")
    assert raw.shape[1] == len(config.preprocessing.input.features)
    rng = np.random.default_rng(3)
    raw = raw[:40].copy()
    # Edge cases the spec handles: missing values where an impute step allows them, unseen categories.
    raw[rng.integers(0, 40, size=5), 0] = np.nan
    category = config.preprocessing.input.features.index("size_class")
    raw[:3, category] = [17.0, -1.0, 99.0]
    transformed = NumpyPreprocessor(config.preprocessing).transform(raw)
    bare = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = dict(
        zip(["label", "probabilities"], bare.run(["label", "probabilities"], {bare.get_inputs()[0].name: transformed}))
    )
    reply = server.v2().ModelInfer(v2_request(model, raw))
    got = np.frombuffer(reply.raw_output_contents[1], np.float32).reshape(40, 2)
    np.testing.assert_allclose(got, expected["probabilities"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.frombuffer(reply.raw_output_contents[0], np.int64), expected["label"])


@pytest.mark.parametrize("model", MODELS)
def test_nan_without_impute_and_wrong_width_are_invalid(
    server: InProcessServer, example_repository: Path, model: str
) -> None:
    raw, _, _ = load_split(example_repository / model / "data" / "holdout.npz")
    features = load_model_config(example_repository / model).preprocessing.input.features  # type: ignore[union-attr]
    bad = raw[:4].copy()
    bad[2, features.index("worst_concavity")] = np.nan
    with pytest.raises(grpc.RpcError) as info:
        server.v2().ModelInfer(v2_request(model, bad))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "worst_concavity" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        server.v2().ModelInfer(v2_request(model, raw[:4, :30]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "31" in info.value.details()


def test_metadata_advertises_the_raw_input(server: InProcessServer) -> None:
    from driftserve.api import grpc_service_pb2 as pb

    meta = server.v2().ModelMetadata(pb.ModelMetadataRequest(name="breast_cancer_prep_onnx"))
    assert [(i.name, i.datatype, list(i.shape)) for i in meta.inputs] == [("input", "FP32", [-1, 31])]
