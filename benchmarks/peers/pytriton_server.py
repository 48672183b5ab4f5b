"""PyTriton serving one ONNX model: a ``@batch`` inference function over one ONNX Runtime session.

Runs with the Triton peer environment's interpreter, never driftserve's:

    .peers/triton/bin/python benchmarks/peers/pytriton_server.py --onnx M.onnx --name NAME \\
        --grpc-port P --http-port H --metrics-port Q

PyTriton starts the tritonserver bundled in its wheel and binds the function through its Python
backend proxy; Triton's dynamic batcher forms the batches (max 64 rows, 500 µs queue delay, as the
other servers in the benchmark). Since 0.7.0 PyTriton restricts some endpoints to a generated
token by default, ``statistics`` among them; perf_analyzer reads ModelStatistics when a server
advertises the extension, so the restriction keeps every default except that one.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, Triton, TritonConfig, TritonSecurityConfig

_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


def _tensor(node: Any) -> Tensor:
    dims = tuple(node.shape[1:]) or (1,)  # a tensor with only a batch dimension is served as [batch, 1]
    return Tensor(name=node.name, dtype=_NUMPY[node.type], shape=dims)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-queue-delay-us", type=int, default=500)
    args = parser.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(args.onnx, options, providers=["CPUExecutionProvider"])
    output_names = [o.name for o in session.get_outputs()]

    @batch  # type: ignore[misc]  # PyTriton ships no type information
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        results = session.run(None, inputs)
        return {name: r.reshape(-1, 1) if r.ndim == 1 else r for name, r in zip(output_names, results)}

    config = TritonConfig(
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        allow_gpu_metrics=False,
    )
    security = TritonSecurityConfig(restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"])
    with Triton(config=config, security_config=security) as triton:
        triton.bind(
            model_name=args.name,
            infer_func=infer,
            inputs=[_tensor(i) for i in session.get_inputs()],
            outputs=[_tensor(o) for o in session.get_outputs()],
            config=ModelConfig(
                max_batch_size=args.max_batch_size,
                batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us),
            ),
        )
        print(f"PYTRITON_READY grpc_port={args.grpc_port}", flush=True)
        triton.serve()


if __name__ == "__main__":
    main()
