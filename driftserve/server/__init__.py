"""driftserve inference server: ONNX models over native gRPC and the Open Inference Protocol."""
