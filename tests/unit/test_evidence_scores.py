"""Scores of one version (chalicelib.evidence.scores) against scikit-learn and
against the Wilson interval solved by hand."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    precision_score,
    recall_score,
    root_mean_squared_error,
)

from chalicelib.evidence.scores import (
    Estimate,
    classification_scores,
    regression_scores,
    wilson_interval,
    z_value,
)

Z95 = 1.959963984540054


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_classification_scores_match_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, size=400)
    # Class 4 is never predicted (precision 0), and class 5 never true (recall 0).
    predictions = np.where(rng.random(400) < 0.6, labels, rng.integers(0, 4, 400))
    predictions[labels == 4] = np.where(rng.random((labels == 4).sum()) < 0.5, 5, 0)
    classes = list(range(6))
    scores = classification_scores(labels, predictions)

    assert scores.classes == tuple(str(name) for name in classes)
    assert scores.accuracy.value == pytest.approx(accuracy_score(labels, predictions))
    assert scores.correct == int((labels == predictions).sum())
    for ours, theirs in [
        (
            scores.precision,
            precision_score(
                labels, predictions, labels=classes, average=None, zero_division=0
            ),
        ),
        (
            scores.recall,
            recall_score(
                labels, predictions, labels=classes, average=None, zero_division=0
            ),
        ),
    ]:
        assert ours == pytest.approx(tuple(theirs), rel=1e-12)
    assert scores.macro_f1 == pytest.approx(
        f1_score(labels, predictions, labels=classes, average="macro", zero_division=0)
    )
    assert np.array_equal(
        np.array(scores.confusion),
        confusion_matrix(labels, predictions, labels=classes),
    )


def test_string_labels_are_compared_as_text() -> None:
    scores = classification_scores(["cat", "dog", "dog", 1], ["cat", "cat", "dog", "1"])
    assert scores.classes == ("1", "cat", "dog")
    assert scores.confusion == ((1, 0, 0), (0, 1, 0), (0, 1, 1))
    assert (scores.count, scores.correct) == (4, 3)
    assert scores.to_json()["accuracy"]["value"] == 0.75


def test_classification_refuses_misaligned_inputs() -> None:
    with pytest.raises(ValueError, match="3 labels for 2 predictions"):
        classification_scores([1, 2, 3], [1, 2])


def wilson_by_hand(successes: int, trials: int, z: float) -> tuple[float, float]:
    """The Wilson interval as the roots p of (p_hat - p)^2 = z^2 p (1 - p) / n."""
    share = successes / trials
    # (1 + z^2/n) p^2 - (2 p_hat + z^2/n) p + p_hat^2 = 0
    roots = np.roots([1 + z * z / trials, -(2 * share + z * z / trials), share * share])
    low, high = sorted(float(root.real) for root in roots)
    return low, high


@pytest.mark.parametrize(
    ("successes", "trials"), [(0, 10), (10, 10), (81, 100), (1, 3), (950, 1000)]
)
def test_wilson_interval_is_the_root_of_its_quadratic(
    successes: int, trials: int
) -> None:
    estimate = wilson_interval(successes, trials)
    low, high = wilson_by_hand(successes, trials, Z95)
    assert estimate.value == successes / trials
    assert (estimate.low, estimate.high) == pytest.approx((low, high), abs=1e-12)


def test_wilson_interval_reference_values() -> None:
    # By hand: 0 of 10 gives (0, z^2 / (n + z^2)), 10 of 10 (n / (n + z^2), 1);
    # 81 of 100: centre (0.81 + z^2/200) / (1 + z^2/100) = 0.798542, half-width
    # z sqrt(0.81 * 0.19 / 100 + z^2 / 40000) / (1 + z^2/100) = 0.076321.
    none = wilson_interval(0, 10)
    assert (none.value, none.low, none.high) == pytest.approx(
        (0, 0, 0.277533), abs=1e-6
    )
    every = wilson_interval(10, 10)
    assert (every.low, every.high) == pytest.approx((0.722467, 1.0), abs=1e-6)
    most = wilson_interval(81, 100)
    assert (most.low, most.high) == pytest.approx((0.722212, 0.874852), abs=1e-6)
    assert wilson_interval(81, 100, confidence=0.99).low < most.low


def test_wilson_interval_refusals_and_no_trials() -> None:
    empty = wilson_interval(0, 0)
    assert math.isnan(empty.value) and (empty.low, empty.high) == (0.0, 1.0)
    with pytest.raises(ValueError, match="11 successes in 10 trials"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="confidence must be between 0 and 1"):
        z_value(1.0)


def test_regression_scores_match_scikit_learn_and_the_interval_formula() -> None:
    rng = np.random.default_rng(21)
    labels = rng.normal(10, 3, size=250)
    predictions = labels + rng.normal(0.5, 1.5, size=250)
    scores = regression_scores(labels, predictions)
    assert scores.mae.value == pytest.approx(mean_absolute_error(labels, predictions))
    assert scores.rmse.value == pytest.approx(
        root_mean_squared_error(labels, predictions)
    )

    absolute = np.abs(predictions - labels).tolist()
    half = Z95 * statistics.stdev(absolute) / math.sqrt(250)
    assert (scores.mae.low, scores.mae.high) == pytest.approx(
        (statistics.fmean(absolute) - half, statistics.fmean(absolute) + half)
    )
    squared = [error**2 for error in (predictions - labels).tolist()]
    half = Z95 * statistics.stdev(squared) / math.sqrt(250)
    assert (scores.rmse.low, scores.rmse.high) == pytest.approx(
        (
            math.sqrt(statistics.fmean(squared) - half),
            math.sqrt(statistics.fmean(squared) + half),
        )
    )


def test_regression_scores_of_one_pair_and_refusals() -> None:
    scores = regression_scores([1.0], [3.0])
    assert scores.mae == Estimate(2.0, 2.0, 2.0)
    assert scores.rmse == Estimate(2.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="0 labels for 0 predictions"):
        regression_scores([], [])
