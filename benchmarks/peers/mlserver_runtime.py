"""MLServer custom runtime: one ONNX Runtime session (one intra-op thread) over the model's ONNX file.

Copied next to ``model-settings.json`` (whose ``implementation`` names
``mlserver_runtime.OnnxRuntimeModel``) by the peers benchmark; runs inside MLServer, in the peer
virtual environment, never in driftserve's. MLServer's adaptive batcher merges requests before
``predict`` and splits the response rows back.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxRuntimeModel(MLModel):  # type: ignore[misc]  # MLServer ships no type information
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        path = await get_model_uri(self._settings)
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {request_input.name: NumpyCodec.decode_input(request_input) for request_input in payload.inputs}
        results = self.session.run(None, feeds)
        outputs = [
            # Outputs with only a batch dimension are declared as [-1, 1] in model-settings.json.
            NumpyCodec.encode_output(name, np.asarray(r).reshape(-1, 1) if np.ndim(r) == 1 else r)
            for name, r in zip(self.output_names, results)
        ]
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=outputs)
