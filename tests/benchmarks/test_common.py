"""`benchmarks.common.markdown_table`: the layout every benchmark report's tables share."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.common import from_source, markdown_table
from benchmarks.mirror_bench import added_cpu_us


def test_mixed_alignment_and_cells_formatted_with_str() -> None:
    lines = markdown_table(("size", "name"), ((1, "a"), (2.5, "`b`")), "rl")
    assert lines == [
        "| size | name |",
        "|---:|---|",
        "| 1 | a |",
        "| 2.5 | `b` |",
    ]


def test_default_alignment_is_first_column_left_the_rest_right() -> None:
    rows = ((model, f"{rps:.0f}", f"{p99:.2f}") for model, rps, p99 in [("lr", 1234.5, 0.25)])
    assert markdown_table(("model", "req/s", "p99"), rows) == [
        "| model | req/s | p99 |",
        "|---|---:|---:|",
        "| lr | 1234 | 0.25 |",
    ]


def test_no_rows_gives_header_and_rule_only() -> None:
    assert markdown_table(("a",), []) == ["| a |", "|---|"]


@pytest.mark.parametrize("align", ["l", "lrr", "lc"])
def test_align_must_name_l_or_r_for_each_column(align: str) -> None:
    with pytest.raises(ValueError, match="align"):
        markdown_table(("a", "b"), [], align)


def test_row_width_must_match_the_header() -> None:
    with pytest.raises(ValueError, match="row has 3 cells"):
        markdown_table(("a", "b"), [(1, 2, 3)])


def test_from_source_runs_the_driftserve_of_that_tree(tmp_path: Path) -> None:
    (tmp_path / "driftserve").mkdir()
    (tmp_path / "driftserve" / "__init__.py").write_text("BUILD = 'other'\n")
    probe = [sys.executable, "-c", "import driftserve; print(driftserve.BUILD, driftserve.__file__)"]
    out = subprocess.run(from_source(probe, tmp_path), capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "other" and Path(out[1]).parent.parent == tmp_path
    assert from_source(probe, None) == probe


def test_added_cpu_pairs_rounds_and_skips_failed_ones() -> None:
    def run(cpu: float) -> dict[str, float]:
        return {"server_cpu_us_per_request": cpu}

    runs = {
        "m_mirrored": [run(110), run(205), run(float("nan")), run(330)],
        "m_plain": [run(100), run(200), run(300), run(300)],
    }
    assert added_cpu_us(runs, "m") == 10  # median of 10, 5, 30; the failed round is left out
