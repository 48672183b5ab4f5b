"""driftserve drift sidecar: mirrored traffic in, streaming drift and shadow comparison out."""
