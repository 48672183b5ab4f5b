"""The TLS benchmark end to end at its smallest: four servers, every variant measured without errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import tls_overhead

pytestmark = pytest.mark.slow


def test_every_variant_is_measured_and_reported(example_repository: Path, tmp_path: Path) -> None:
    argv = ["--model-repository", str(example_repository), "--clients", "1", "--rounds", "1", "--duration-s", "0.3"]
    assert tls_overhead.main([*argv, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "tls.json").read_text())
    assert set(report["runs"]) == {f"{variant}|1" for variant in tls_overhead.VARIANTS}
    assert all(run[0]["throughput_rps"] > 0 for run in report["runs"].values())
    table = (tmp_path / "tls.md").read_text()
    assert "| 1 | tls+token (aio interceptor) |" in table and "Paired within each round" in table
