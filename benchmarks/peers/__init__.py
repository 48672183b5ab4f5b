"""driftserve next to real peer servers (Triton, PyTriton, MLServer): see benchmarks/peers/bench.py."""
