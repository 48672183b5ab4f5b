"""driftserve inference server: ONNX models over native gRPC and the Open Inference Protocol."""

__version__ = "0.1.0"
