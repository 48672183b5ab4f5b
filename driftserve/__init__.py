"""driftserve: a low-latency ONNX model server with a live drift sidecar.

Subpackages are layers; imports only go down (``tests/test_layers.py`` holds the contract)::

    driftserve.cli, driftserve.launcher     the command line; `run` starts server + sidecar
    driftserve.server | driftserve.sidecar | driftserve.bench    siblings, never import each other
    driftserve.core                          what both processes share
    driftserve.api                           generated protobuf / gRPC code
"""

__version__ = "0.1.0"
