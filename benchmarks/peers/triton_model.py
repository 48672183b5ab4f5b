"""Triton Python-backend model: one ONNX Runtime session (one intra-op thread) over ``model.onnx``.

Copied as ``<model>/1/model.py`` into the Triton model repository the peers benchmark generates;
runs inside Triton's Python stub process, in the peer virtual environment (numpy, onnxruntime),
never in driftserve's. Triton's dynamic batcher hands ``execute`` several requests at once: their
rows are concatenated, run in one ``session.run``, and split back by row counts.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils  # provided by the Python stub


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests: list[Any]) -> list[Any]:
        feeds = {
            name: [pb_utils.get_input_tensor_by_name(request, name).as_numpy() for request in requests]
            for name in self.inputs
        }
        rows = [len(array) for array in feeds[self.inputs[0]]]
        results = self.session.run(None, {name: np.concatenate(arrays) for name, arrays in feeds.items()})
        # Outputs with only a batch dimension are declared as [-1, 1] in config.pbtxt.
        results = [r.reshape(-1, 1) if r.ndim == 1 else r for r in results]
        responses, start = [], 0
        for count in rows:
            tensors = [pb_utils.Tensor(name, r[start : start + count]) for name, r in zip(self.outputs, results)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += count
        return responses
