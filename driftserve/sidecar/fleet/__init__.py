"""Fleet-wide drift: an aggregator that pulls many sidecars' window state and merges it exactly."""
