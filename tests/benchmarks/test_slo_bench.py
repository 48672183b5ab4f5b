"""benchmarks.slo_bench without perf_analyzer: the variant repository it serves and its report."""

from __future__ import annotations

from pathlib import Path

from benchmarks.slo_bench import NAIVE, make_repository, markdown, variants
from driftserve.core.config import load_model_config


def test_every_variant_is_a_valid_model_that_differs_only_in_batching(example_repository: Path, tmp_path: Path) -> None:
    sections = variants(15.0, [0, 8000], {"enabled": True, "max_queue_delay_us": 500})
    names = make_repository(example_repository, tmp_path, "breast_cancer_lr", sections)
    assert set(names) == {"slo", "example", "off", "fixed0", "fixed8000"}
    configs = {v: load_model_config(tmp_path / n) for v, n in names.items()}
    assert configs["slo"].batching.slo_p99_ms == 15.0
    assert configs["slo"].batching.delay_bound_us == 15_000  # only the objective is set
    assert configs["off"].batching.enabled is False
    assert configs["fixed8000"].batching.max_queue_delay_us == 8000
    assert len({c.max_batch_size for c in configs.values()}) == 1
    assert all((tmp_path / n / "1" / "model.onnx").is_file() for n in names.values())


def test_report_tables_name_the_best_fixed_delay_and_the_ratio() -> None:
    def run(rps: float, p99: float) -> dict[str, float]:
        return {"throughput_rps": rps, "p50_ms": p99 / 2, "p99_ms": p99}

    closed = {"slo": run(900, 5), "example": run(700, 6), "off": run(500, 9), "fixed0": run(600, 4)}
    closed |= {"fixed8000": run(1000, 12), NAIVE: run(400, 3)}
    report = {
        "command": "python -m benchmarks.slo_bench --quick",
        "rounds": 1,
        "window_ms": 1500,
        "slo_ms": 20.0,
        "machine": "2 cores",
        "date": "2026-11-29",
        "models": {
            "breast_cancer_mlp": {
                "closed_loop": {"32": closed},
                "best_fixed": {"32": "fixed8000"},
                "slo_vs_best_fixed": {"32": 0.9},
                "max_rps": 900.0,
                "open_loop": {"0.50": {"slo": run(450, 8), "example": run(450, 7)}},
            }
        },
    }
    text = "\n".join(markdown(report))
    assert "| 32 | 900 / 5.00 | 700 / 6.00 | 1000 / 12.00 | 500 / 9.00 | 400 / 3.00 | 8000 µs | 0.90 | 1.29 |" in text
    assert "| 50% (450 req/s) | 4.00 / 8.00 | 3.50 / 7.00 |" in text
