"""The load generator's exit codes and default target, shared by its options and its run."""

EXIT_OK, EXIT_SLO_VIOLATED, EXIT_USAGE = 0, 1, 2
# driftserve's default gRPC port.
DEFAULT_TARGET = "127.0.0.1:8001"
