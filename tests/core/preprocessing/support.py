"""Helpers shared by the preprocessing tests: tiny ONNX models and an ORT runner."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from driftserve.core.preprocessing import PreprocessingSpec, fuse_into_model

RTOL = 1e-6
ATOL = 1e-6


def identity_model(width: int, input_name: str = "input", opset: int = 17) -> onnx.ModelProto:
    """A model that returns its float32 [N, width] input: fusing into it exposes the graph."""
    graph = helper.make_graph(
        [helper.make_node("Identity", [input_name], ["out"])],
        "identity",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", width])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def fused_transform(spec: PreprocessingSpec) -> ort.InferenceSession:
    """An ORT session running the spec fused in front of an identity model."""
    return session(fuse_into_model(spec, identity_model(spec.output_width)))


def run_fused(sess: ort.InferenceSession, spec: PreprocessingSpec, x: np.ndarray) -> np.ndarray:
    return sess.run(["out"], {spec.input.name: x})[0]
