"""Fixtures: the naive baseline server on a tiny linear model (``tests.loadgen_support``)."""

from tests.loadgen_support import model_repository, naive_server, start_naive_server

__all__ = ["model_repository", "naive_server", "start_naive_server"]
