"""ModelVersion.validate: what it accepts, the row count it returns, and what it refuses, and why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from driftserve.core.config import load_model_config
from driftserve.core.errors import InvalidArgument
from driftserve.core.model import ModelVersion, load_model_version


@pytest.fixture(scope="module")
def lr(example_repository: Path) -> ModelVersion:
    model_dir = example_repository / "breast_cancer_lr"
    return load_model_version("breast_cancer_lr", 2, model_dir / "2" / "model.onnx", load_model_config(model_dir))


@pytest.mark.parametrize("rows", [1, 7, 64])
def test_valid_inputs_return_their_row_count(lr: ModelVersion, rows: int) -> None:
    assert lr.validate({"input": np.zeros((rows, 30), np.float32)}) == rows


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"input": np.zeros((1, 29), np.float32)}, r"shape \[1, 29\] does not match the model's \[-1, 30\]"),
        ({"input": np.zeros((1, 30, 1), np.float32)}, r"shape \[1, 30, 1\] does not match"),
        ({"input": np.zeros(30, np.float32)}, r"shape \[30\] does not match"),
        ({"input": np.float32(1.0).reshape(())}, r"shape \[\] does not match"),
        ({"input": np.zeros((0, 30), np.float32)}, "batch dimension is 0; need >= 1 row"),
        ({"input": np.zeros((65, 30), np.float32)}, "65 rows exceed max_batch_size 64"),
        ({"input": np.zeros((1, 30), np.float64)}, "datatype FP64 but model 'breast_cancer_lr' expects FP32"),
        ({}, r"missing input\(s\) \['input'\]"),
        (
            {"input": np.zeros((1, 30), np.float32), "extra": np.zeros((1, 1), np.float32)},
            r"unexpected input\(s\) \['extra'\]",
        ),
        (
            {"inputs": np.zeros((1, 30), np.float32)},
            r"missing input\(s\) \['input'\]; unexpected input\(s\) \['inputs'\]",
        ),
    ],
)
def test_invalid_inputs_are_refused_with_what_was_expected(lr: ModelVersion, inputs: dict, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        lr.validate(inputs)
