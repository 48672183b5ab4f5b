"""Small linear classifiers for rollout tests: same signature, chosen weights, optional extra cost.

``input`` FP32 [N, 4] → ``probabilities`` FP32 [N, 2] (softmax of x·W + b) and ``label`` INT64 [N].
A "heavy" version adds square MatMuls whose result is multiplied by zero, so it answers like
its weights say but costs much more per row.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

N_FEATURES = 4
RNG = np.random.default_rng(7)
BASE_W = RNG.normal(size=(N_FEATURES, 2)).astype(np.float32)
BASE_B = np.zeros(2, dtype=np.float32)


def linear_model(w: np.ndarray, b: np.ndarray, heavy_layers: int = 0, n_features: int = N_FEATURES) -> bytes:
    """The ONNX bytes of the classifier (see the module docstring)."""
    inits = [numpy_helper.from_array(w.astype(np.float32), "W"), numpy_helper.from_array(b.astype(np.float32), "B")]
    nodes = [helper.make_node("MatMul", ["input", "W"], ["xw"]), helper.make_node("Add", ["xw", "B"], ["logits0"])]
    logits = "logits0"
    if heavy_layers:
        width = 2048
        inits.append(numpy_helper.from_array(RNG.normal(size=(n_features, width)).astype(np.float32), "H0"))
        inits.append(numpy_helper.from_array(np.zeros((width, 2), dtype=np.float32), "Hz"))
        nodes.append(helper.make_node("MatMul", ["input", "H0"], ["h0"]))
        previous = "h0"
        for i in range(heavy_layers):
            weight = (RNG.normal(size=(width, width)) / np.sqrt(width)).astype(np.float32)
            inits.append(numpy_helper.from_array(weight, f"H{i + 1}"))
            nodes.append(helper.make_node("MatMul", [previous, f"H{i + 1}"], [f"h{i + 1}"]))
            previous = f"h{i + 1}"
        nodes.append(helper.make_node("MatMul", [previous, "Hz"], ["zero"]))
        nodes.append(helper.make_node("Add", ["logits0", "zero"], ["logits1"]))
        logits = "logits1"
    nodes.append(helper.make_node("Softmax", [logits], ["probabilities"], axis=1))
    nodes.append(helper.make_node("ArgMax", ["probabilities"], ["label2d"], axis=1, keepdims=1))
    nodes.append(helper.make_node("Flatten", ["label2d"], ["labelf"], axis=0))
    nodes.append(helper.make_node("Squeeze", ["labelf", "axes0"], ["label"]))
    inits.append(numpy_helper.from_array(np.array([0], dtype=np.int64), "axes0"))
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", n_features])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_version(model_dir: Path, version: int, data: bytes) -> Path:
    """Write ``<version>/model.onnx`` the way a publisher should: a temporary name, then rename."""
    target = model_dir / str(version) / "model.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(".model.onnx.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return target


def write_holdout(model_dir: Path, rows: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Holdout rows labelled by the base weights (so the base model scores 1.0)."""
    x = RNG.normal(size=(rows, N_FEATURES)).astype(np.float32)
    y = np.argmax(x @ BASE_W + BASE_B, axis=1).astype(np.int64)
    (model_dir / "data").mkdir(parents=True, exist_ok=True)
    np.savez(model_dir / "data" / "holdout.npz", X=x, y=y)
    return x, y


def config_yaml(
    rollout: str, validation: str = "{data: data/holdout.npz, labels: data/holdout.npz, metric: accuracy, min: 0.8}"
) -> str:
    # One ONNX Runtime thread per session: a slow candidate then keeps to one core instead of
    # starving the event loop, which would slow the primary's requests as much as its own.
    return f"""\
max_batch_size: 64
runtime: {{intra_op_threads: 1, inter_op_threads: 1}}
batching: {{enabled: true, max_queue_delay_us: 0}}
deployment:
  validation: {validation}
  rollout: {rollout}
"""


def make_model(model_dir: Path, rollout: str, **kw: Any) -> np.ndarray:
    """A managed model with version 1 (the base weights) and a holdout; returns the holdout rows."""
    model_dir.mkdir(parents=True)
    (model_dir / "config.yaml").write_text(config_yaml(rollout, **kw))
    write_version(model_dir, 1, linear_model(BASE_W, BASE_B))
    x, _ = write_holdout(model_dir)
    return x


def ort_outputs(data: bytes, x: np.ndarray) -> dict[str, np.ndarray]:
    """What ONNX Runtime itself answers for ``x`` (the oracle)."""
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    label, probabilities = session.run(["label", "probabilities"], {"input": x})
    return {"label": label, "probabilities": probabilities}
