"""driftserve benchmarks: latency-SLO load generator, naive baseline server, micro-benchmarks."""
