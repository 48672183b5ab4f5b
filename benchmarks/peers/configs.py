"""What each peer server is told: the Triton model repository and the MLServer settings, written from
one ONNX model's signature so every server serves the same file with the same batching.

The batching is the example config's for driftserve's MLP: up to 64 rows per batch, at most 500 µs
of queueing (Triton ``dynamic_batching.max_queue_delay_microseconds``; MLServer adaptive batching
``max_batch_size`` / ``max_batch_time`` in seconds). Each peer runs one ONNX Runtime session with
one intra-op thread, like the example config's ``runtime``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TRITON_MODEL_PY = HERE / "triton_model.py"
MLSERVER_RUNTIME_PY = HERE / "mlserver_runtime.py"
MLSERVER_RUNTIME_CLASS = "mlserver_runtime.OnnxRuntimeModel"
MLSERVER_MODEL_CONFIG_FILE = "model_config_response.bin"  # read by mlserver_launch.py
MAX_BATCH_SIZE = 64
MAX_QUEUE_DELAY_US = 500

# ONNX element types of the example models and what Triton's config and the V2 protocol call them.
_ONNX_TO_TRITON = {
    "tensor(float)": ("TYPE_FP32", "FP32"),
    "tensor(double)": ("TYPE_FP64", "FP64"),
    "tensor(int64)": ("TYPE_INT64", "INT64"),
    "tensor(int32)": ("TYPE_INT32", "INT32"),
    "tensor(bool)": ("TYPE_BOOL", "BOOL"),
}


@dataclass(frozen=True)
class Tensor:
    """One input or output of the model: name, ONNX type, shape without the batch dimension."""

    name: str
    onnx_type: str
    dims: tuple[int, ...]

    @property
    def triton_type(self) -> str:
        return _triton_types(self.onnx_type)[0]

    @property
    def datatype(self) -> str:
        """The V2 protocol datatype (FP32, INT64, ...)."""
        return _triton_types(self.onnx_type)[1]

    @property
    def served_dims(self) -> tuple[int, ...]:
        """Dims as the peers declare them: a tensor with only a batch dimension becomes [batch, 1]
        (Triton wants at least one dim past the batch; the peers reshape such outputs)."""
        return self.dims or (1,)


def _triton_types(onnx_type: str) -> tuple[str, str]:
    try:
        return _ONNX_TO_TRITON[onnx_type]
    except KeyError:
        known = ", ".join(sorted(_ONNX_TO_TRITON))
        raise ValueError(f"ONNX type {onnx_type} is not one the peers benchmark maps (known: {known})") from None


@dataclass(frozen=True)
class Signature:
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]


def _dims(shape: list[Any], where: str) -> tuple[int, ...]:
    if not shape or isinstance(shape[0], int):
        raise ValueError(f"{where}: expected a dynamic batch dimension first, got shape {shape}")
    rest = shape[1:]
    if not all(isinstance(d, int) and d > 0 for d in rest):
        raise ValueError(f"{where}: dims past the batch dimension must be fixed, got shape {shape}")
    return tuple(rest)


def read_signature(onnx_path: Path) -> Signature:
    """Inputs and outputs of an ONNX model whose first dimension is the batch."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return Signature(
        tuple(Tensor(i.name, i.type, _dims(i.shape, f"{onnx_path} input {i.name}")) for i in session.get_inputs()),
        tuple(Tensor(o.name, o.type, _dims(o.shape, f"{onnx_path} output {o.name}")) for o in session.get_outputs()),
    )


def _pbtxt_tensors(tensors: tuple[Tensor, ...]) -> str:
    items = [
        f'  {{ name: "{t.name}" data_type: {t.triton_type} dims: [ {", ".join(map(str, t.served_dims))} ] }}'
        for t in tensors
    ]
    return ",\n".join(items)


def triton_config(
    name: str,
    signature: Signature,
    max_batch_size: int = MAX_BATCH_SIZE,
    max_queue_delay_us: int = MAX_QUEUE_DELAY_US,
) -> str:
    """``config.pbtxt`` for the Python-backend model: one CPU instance, dynamic batching."""
    return (
        f'name: "{name}"\n'
        'backend: "python"\n'
        f"max_batch_size: {max_batch_size}\n"
        f"input [\n{_pbtxt_tensors(signature.inputs)}\n]\n"
        f"output [\n{_pbtxt_tensors(signature.outputs)}\n]\n"
        f"dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}\n"
        "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
    )


def write_triton_repository(dest: Path, name: str, onnx_path: Path, signature: Signature | None = None) -> Path:
    """A Triton model repository ``dest/<name>/{config.pbtxt,1/model.py,1/model.onnx}``; returns ``dest``."""
    signature = signature or read_signature(onnx_path)
    version = dest / name / "1"
    version.mkdir(parents=True)
    (dest / name / "config.pbtxt").write_text(triton_config(name, signature))
    shutil.copy(TRITON_MODEL_PY, version / "model.py")
    shutil.copy(onnx_path, version / "model.onnx")
    return dest


def mlserver_settings(http_port: int, grpc_port: int, metrics_port: int, metrics_dir: Path) -> dict[str, Any]:
    """``settings.json``: loopback only, every port chosen by the caller, the workers' shared metrics
    files in ``metrics_dir`` (MLServer's default is ``.metrics`` in the working directory), the rest
    MLServer's defaults (so one inference worker process, as users get it)."""
    return {
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "metrics_dir": str(metrics_dir),
        "debug": False,
        "load_models_at_startup": True,
    }


def mlserver_model_settings(
    name: str,
    signature: Signature,
    max_batch_size: int = MAX_BATCH_SIZE,
    max_queue_delay_us: int = MAX_QUEUE_DELAY_US,
) -> dict[str, Any]:
    """``model-settings.json``: the custom ONNX Runtime runtime, adaptive batching, the model's tensors."""

    def tensors(items: tuple[Tensor, ...]) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": [-1, *t.served_dims]} for t in items]

    return {
        "name": name,
        "implementation": MLSERVER_RUNTIME_CLASS,
        "max_batch_size": max_batch_size,
        "max_batch_time": max_queue_delay_us / 1e6,
        "inputs": tensors(signature.inputs),
        "outputs": tensors(signature.outputs),
        "parameters": {"uri": "./model.onnx", "version": "1"},
    }


def model_config_response(name: str, signature: Signature, max_batch_size: int = MAX_BATCH_SIZE) -> bytes:
    """The serialized V2 ``ModelConfigResponse`` perf_analyzer asks for before any load (MLServer has
    no such RPC; ``mlserver_launch.py`` serves these bytes)."""
    from driftserve.api import grpc_service_pb2, model_config_pb2

    config = model_config_pb2.ModelConfig(name=name, platform="mlserver", max_batch_size=max_batch_size)
    for t in signature.inputs:
        config.input.add(name=t.name, data_type=model_config_pb2.DataType.Value(t.triton_type), dims=t.served_dims)
    for t in signature.outputs:
        config.output.add(name=t.name, data_type=model_config_pb2.DataType.Value(t.triton_type), dims=t.served_dims)
    return grpc_service_pb2.ModelConfigResponse(config=config).SerializeToString()


def write_mlserver_folder(
    dest: Path, name: str, onnx_path: Path, ports: tuple[int, int, int], signature: Signature | None = None
) -> Path:
    """An MLServer folder: ``settings.json``, the ModelConfig reply for perf_analyzer, and ``<name>/``
    with ``model-settings.json``, the runtime module and the ONNX file (MLServer puts the model
    folder on ``sys.path`` for custom runtimes)."""
    signature = signature or read_signature(onnx_path)
    model = dest / name
    model.mkdir(parents=True)
    settings = mlserver_settings(*ports, metrics_dir=dest / ".metrics")
    (dest / "settings.json").write_text(json.dumps(settings, indent=2))
    (dest / MLSERVER_MODEL_CONFIG_FILE).write_bytes(model_config_response(name, signature))
    (model / "model-settings.json").write_text(json.dumps(mlserver_model_settings(name, signature), indent=2))
    shutil.copy(MLSERVER_RUNTIME_PY, model / "mlserver_runtime.py")
    shutil.copy(onnx_path, model / "model.onnx")
    return dest
