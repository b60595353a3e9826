"""How right one version is, from its labelled predictions (pure).

Classifiers: accuracy with a Wilson score interval, per-class precision and
recall, macro F1 and the confusion matrix, all as scikit-learn computes them
(a class that is never predicted has precision 0; classes are the sorted union of
labels and predictions). Regressors: MAE and RMSE with normal-approximation
intervals: the mean of |error| (or of error^2) plus or minus z times its standard
error, for RMSE the square root of the MSE interval's ends (the root is monotone,
so the coverage is the MSE interval's). No resampling, so the cost is one pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

from chalicelib.evidence.baseline import Column


@dataclass(frozen=True)
class Estimate:
    """A figure with the ends of its confidence interval."""

    value: float
    low: float
    high: float

    def to_json(self) -> dict[str, float]:
        """``{"value", "low", "high"}``, the report's form."""
        return {"value": self.value, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class ClassificationScores:
    """A classifier's figures over ``count`` labelled predictions."""

    count: int
    correct: int
    accuracy: Estimate
    classes: tuple[str, ...]
    precision: tuple[float, ...]
    recall: tuple[float, ...]
    macro_f1: float
    confusion: tuple[tuple[int, ...], ...]

    def to_json(self) -> dict[str, Any]:
        """The JSON-able form; the confusion matrix's rows are the true classes."""
        return {
            "count": self.count,
            "correct": self.correct,
            "accuracy": self.accuracy.to_json(),
            "classes": list(self.classes),
            "precision": list(self.precision),
            "recall": list(self.recall),
            "macro_f1": self.macro_f1,
            "confusion": [list(row) for row in self.confusion],
        }


@dataclass(frozen=True)
class RegressionScores:
    """A regressor's figures over ``count`` labelled predictions."""

    count: int
    mae: Estimate
    rmse: Estimate

    def to_json(self) -> dict[str, Any]:
        """The JSON-able form."""
        return {
            "count": self.count,
            "mae": self.mae.to_json(),
            "rmse": self.rmse.to_json(),
        }


def z_value(confidence: float) -> float:
    """The two-sided normal quantile for ``confidence`` (1.96 for 0.95)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> Estimate:
    """The proportion ``successes / trials`` with its Wilson score interval.

    With no trials the value is NaN and the interval (0, 1). Raises ValueError
    when successes is outside [0, trials].
    """
    if not 0 <= successes <= trials:
        raise ValueError(f"{successes} successes in {trials} trials")
    if trials == 0:
        return Estimate(math.nan, 0.0, 1.0)
    z = z_value(confidence)
    share = successes / trials
    centre = (share + z * z / (2 * trials)) / (1 + z * z / trials)
    half = (
        z
        * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials))
        / (1 + z * z / trials)
    )
    return Estimate(share, max(0.0, centre - half), min(1.0, centre + half))


def classification_scores(
    labels: Column, predictions: Column, confidence: float = 0.95
) -> ClassificationScores:
    """Accuracy, precision, recall, macro F1 and confusion of aligned labels.

    Labels and predictions are compared by their ``str()``, so 1 and "1" agree.
    Raises ValueError when the two have different lengths.
    """
    truth = as_labels(labels)
    predicted = as_labels(predictions)
    if truth.shape != predicted.shape:
        raise ValueError(f"{truth.size} labels for {predicted.size} predictions")
    classes, codes = np.unique(np.concatenate([truth, predicted]), return_inverse=True)
    size = len(classes)
    confusion = np.bincount(
        codes[: truth.size] * size + codes[truth.size :], minlength=size * size
    ).reshape(size, size)
    hits = np.diag(confusion).astype(np.float64)
    predicted_totals = confusion.sum(axis=0)
    true_totals = confusion.sum(axis=1)
    precision = np.divide(
        hits, predicted_totals, out=np.zeros(size), where=predicted_totals > 0
    )
    recall = np.divide(hits, true_totals, out=np.zeros(size), where=true_totals > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros(size), where=both > 0)
    correct = int(hits.sum())
    return ClassificationScores(
        count=int(truth.size),
        correct=correct,
        accuracy=wilson_interval(correct, int(truth.size), confidence),
        classes=tuple(str(name) for name in classes),
        precision=tuple(float(value) for value in precision),
        recall=tuple(float(value) for value in recall),
        macro_f1=float(f1.mean()) if size else math.nan,
        confusion=tuple(tuple(int(cell) for cell in row) for row in confusion),
    )


def regression_scores(
    labels: npt.ArrayLike, predictions: npt.ArrayLike, confidence: float = 0.95
) -> RegressionScores:
    """MAE and RMSE of aligned numeric labels and predictions, with intervals.

    The interval of a mean of n terms is ``mean +- z s / sqrt(n)`` with s their
    sample standard deviation (so it needs n >= 2: below that it is the value
    itself). Raises ValueError on different lengths or no pairs.
    """
    truth = np.asarray(labels, dtype=np.float64).ravel()
    predicted = np.asarray(predictions, dtype=np.float64).ravel()
    if truth.shape != predicted.shape or truth.size == 0:
        raise ValueError(f"{truth.size} labels for {predicted.size} predictions")
    errors = predicted - truth
    absolute = mean_interval(np.abs(errors), confidence)
    squared = mean_interval(errors**2, confidence)
    return RegressionScores(
        count=int(truth.size),
        mae=Estimate(absolute.value, max(0.0, absolute.low), absolute.high),
        rmse=Estimate(
            math.sqrt(squared.value),
            math.sqrt(max(0.0, squared.low)),
            math.sqrt(squared.high),
        ),
    )


def mean_interval(values: Column, confidence: float = 0.95) -> Estimate:
    """The mean of some numbers (at least one) with its normal-approximation
    interval, ``mean +- z s / sqrt(n)``; a single number is its own interval."""
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError("a mean needs at least one value")
    mean = float(array.mean())
    if array.size < 2:
        return Estimate(mean, mean, mean)
    half = z_value(confidence) * float(array.std(ddof=1)) / math.sqrt(array.size)
    return Estimate(mean, mean - half, mean + half)


def as_labels(values: Column) -> npt.NDArray[np.str_]:
    """Labels or class predictions as a flat array of their ``str()``."""
    return np.asarray(
        [str(value) for value in np.asarray(values, dtype=object).ravel()], dtype=str
    )
