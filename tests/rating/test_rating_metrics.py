"""RMSE and MAE against hand-computed values."""

import math

import numpy as np
import pytest

from llmrec_platform.evaluation.metrics import mae, rmse


def test_rmse_and_mae_of_a_tiny_list():
    predicted, actual = np.array([3.0, 4.0, 5.0, 2.5]), np.array([4.0, 4.0, 3.0, 3.0])
    # errors -1, 0, 2, -0.5: squares 1 + 0 + 4 + 0.25 = 5.25 over 4; absolutes 1 + 0 + 2 + 0.5 = 3.5 over 4
    assert rmse(predicted, actual) == pytest.approx(math.sqrt(5.25 / 4))
    assert mae(predicted, actual) == pytest.approx(0.875)


def test_a_perfect_prediction_scores_zero_and_rmse_weighs_large_errors_more():
    actual = np.array([1.0, 5.0, 3.0])
    assert rmse(actual, actual) == 0.0 and mae(actual, actual) == 0.0
    one_big = np.array([1.0, 5.0, 6.0])  # one error of 3: RMSE sqrt(9/3) = 1.732 > MAE 1
    assert rmse(one_big, actual) == pytest.approx(math.sqrt(3.0))
    assert mae(one_big, actual) == pytest.approx(1.0)


@pytest.mark.parametrize("predicted, actual", [([1.0, 2.0], [1.0]), ([], []), ([[1.0]], [[1.0]])])
def test_mismatched_or_empty_inputs_fail_loudly(predicted, actual):
    with pytest.raises(ValueError, match="1-d arrays of one length"):
        rmse(np.array(predicted), np.array(actual))
    with pytest.raises(ValueError, match="1-d arrays of one length"):
        mae(np.array(predicted), np.array(actual))
