"""Generated protobuf and gRPC code shared by the server and the sidecar."""
