"""The primary-vs-shadow comparison of one batch."""

from __future__ import annotations

import math

import numpy as np
import pytest

from driftserve.sidecar.shadow import compare_outputs


def test_labels_decide_and_float_outputs_give_deltas() -> None:
    primary = {
        "label": np.array([0, 1, 1, 0]),
        "probabilities": np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]]),
    }
    shadow = {
        "label": np.array([0, 1, 0, 0]),
        "probabilities": np.array([[0.8, 0.2], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]]),
    }
    result = compare_outputs(primary, shadow, 4)
    assert (result.rows, result.decided_rows, result.agreeing_rows) == (4, 4, 3)
    assert result.abs_delta_count == 8
    assert result.abs_delta_sum == pytest.approx(0.1 * 2 + 0.2 * 2)
    assert result.max_abs_delta == pytest.approx(0.2)


def test_argmax_decides_without_a_label_output() -> None:
    primary = {"scores": np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]], dtype=np.float32)}
    shadow = {"scores": np.array([[0.0, 2.0, 1.0], [0.0, 0.0, 3.0]], dtype=np.float32)}
    result = compare_outputs(primary, shadow, 2)
    assert (result.decided_rows, result.agreeing_rows) == (2, 1)
    assert result.max_abs_delta == pytest.approx(3.0)


def test_nothing_comparable_gives_no_decision_and_no_delta() -> None:
    result = compare_outputs({"y": np.array([1.0, 2.0])}, {"y": np.array([[1.0, 2.0]])}, 2)
    assert (result.decided_rows, result.abs_delta_count) == (0, 0)


def test_non_finite_deltas_are_left_out() -> None:
    result = compare_outputs({"y": np.array([1.0, math.nan])}, {"y": np.array([1.5, 2.0])}, 2)
    assert result.abs_delta_count == 1 and result.max_abs_delta == pytest.approx(0.5)
