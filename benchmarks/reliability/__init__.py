"""Reliability scenarios run against real driftserve processes (overload, SIGTERM, kills, soak)."""
