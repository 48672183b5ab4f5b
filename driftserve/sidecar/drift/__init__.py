"""Streaming drift detection: reference profiles, windowed PSI/KS detectors, alerts and metrics.

Submodules are imported explicitly (``from driftserve.sidecar.drift.detector import ModelDriftMonitor``)
so that importing the config schema never pulls in Numba.
"""
