"""`python -m benchmarks.run_all` end to end, shrunk, with the naive server in both roles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import run_all


def test_run_all_writes_side_by_side_reports(model_repository: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    code = run_all.main(
        [
            "--model-repository",
            str(model_repository),
            "--models",
            "linear",
            "--out",
            str(out),
            "--candidate",
            "naive",
            "--quick",
            "--closed-levels",
            "1",
            "--open-rates",
            "50",
            "--max-rate-steps",
            "0",
            "--warmup-s",
            "0.2",
            "--duration-s",
            "0.5",
            "--no-progress",
        ]
    )
    assert code == 0
    report = json.loads((out / "slo.json").read_text())
    (model,) = report["models"]
    assert {r["label"] for r in model["closed"]} == {"candidate-naive", "naive"}
    assert all(r["errors"] == {} and r["ok"] > 0 for r in model["closed"] + model["open"])
    assert [s["slo"] for s in model["max_rate"]] == ["p99<100ms"] * 2 + ["p99<10ms"] * 2
    summary = (out / "slo.md").read_text()
    assert "## Highest open-loop rate meeting the SLO" in summary
    assert "| linear | p99<100ms |" in summary
    assert "## Median latency at concurrency 1" in summary
    assert (out / "slo_linear.png").read_bytes()[:4] == b"\x89PNG"


def test_run_all_rejects_missing_models(model_repository: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        run_all.main(["--model-repository", str(model_repository), "--models", "absent", "--out", str(tmp_path)])
    assert info.value.code == 2
    assert "models ['absent'] not in" in capsys.readouterr().err
