"""`benchmarks.common.markdown_table`: the layout every benchmark report's tables share."""

from __future__ import annotations

import pytest

from benchmarks.common import markdown_table


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
