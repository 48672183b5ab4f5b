"""What the server and the sidecar share: tensors, errors, model config, model loading, processes."""
