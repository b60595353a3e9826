"""Drift of one window of inputs (or outputs) against a baseline, per feature (pure).

Every feature gets two figures, as Evidently reports them:

- PSI on the baseline's bins (numbers) or values and "other" (categories):
  ``sum((c - r) * ln(c / r))`` over the two samples' shares, where an empty bin
  counts as ``epsilon`` (1e-4). Bands: stable below 0.1, moderate up to 0.25,
  shifted above 0.25.
- A distribution test, chosen by the reference's size (Evidently's defaults):
  with at most 1000 reference rows, numbers get the two-sample Kolmogorov-Smirnov
  test when the raw reference values are at hand (another version's predictions)
  and a chi-square test of homogeneity on the baseline's bins when only the
  baseline is (the binned data are all it keeps; the test is exact for what it
  sees and blind within a bin); categories get the chi-square test of
  homogeneity. Drift when the p-value is below 0.05. With more than 1000
  reference rows any test rejects trivial shifts, so distances are used instead:
  the Wasserstein distance on the bins divided by the reference's standard
  deviation for numbers, the Jensen-Shannon distance (natural log, as scipy) for
  categories; drift at 0.1 and above.

With fewer than 100 rows on either side the status is "not enough data" and no
figure is given. Every threshold is a field of ``DriftThresholds``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from chalicelib.evidence.baseline import (
    CategoricalSummary,
    Column,
    FeatureSummary,
    Kind,
    NumericSummary,
    summarise_column,
)
from chalicelib.evidence.pvalues import chi2_sf, kolmogorov_sf

NOT_ENOUGH_DATA = "not enough data"
STABLE = "stable"
DRIFTED = "drifted"
# Another version's outputs are a reference of their own: keep every class they use.
OUTPUT_TOP_VALUES = 1000
Method = Literal["ks", "chi-square", "wasserstein", "jensen-shannon"]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class DriftThresholds:
    """The rules of drift; the defaults are the ones stated in the module's doc."""

    min_rows: int = 100
    large_reference: int = 1000
    p_value: float = 0.05
    distance: float = 0.1
    psi_stable: float = 0.1
    psi_shifted: float = 0.25
    psi_epsilon: float = 1e-4


DEFAULT_THRESHOLDS = DriftThresholds()


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift: status, PSI and its band, the test and its figures.

    ``p_value`` is None for the distances (Wasserstein, Jensen-Shannon); every
    figure is None when the status is "not enough data".
    """

    feature: str
    rows: int
    status: str
    psi: float | None = None
    psi_band: str | None = None
    method: Method | None = None
    statistic: float | None = None
    p_value: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON-able form (the report's ``drift`` entries, without version)."""
        return {
            "feature": self.feature,
            "rows": self.rows,
            "status": self.status,
            "psi": self.psi,
            "psi_band": self.psi_band,
            "method": self.method,
            "statistic": self.statistic,
            "p_value": self.p_value,
        }


def feature_drift(
    summary: FeatureSummary,
    current: Column,
    reference: Column | None = None,
    thresholds: DriftThresholds = DEFAULT_THRESHOLDS,
) -> FeatureDrift:
    """The drift of the ``current`` values of one feature against its ``summary``.

    ``reference`` is the raw reference sample when there is one (it allows the
    KS test for numbers); missing values are left out on both sides. Raises
    InvalidBaselineError when a numeric feature receives text.
    """
    if isinstance(summary, NumericSummary):
        current_counts = summary.bin_counts(current)
    else:
        current_counts = summary.bucket_counts(current)
    return binned_drift(
        summary,
        current_counts,
        thresholds,
        raw=None if reference is None else (reference, current),
    )


def binned_drift(
    summary: FeatureSummary,
    current_counts: npt.ArrayLike,
    thresholds: DriftThresholds = DEFAULT_THRESHOLDS,
    *,
    raw: tuple[Column, Column] | None = None,
) -> FeatureDrift:
    """The drift of a feature already counted on its summary's bins (numbers) or
    values and "other" (categories), as a mergeable capture summary holds it.

    ``raw`` (the reference and current values) allows the KS test for numbers.
    """
    current_counts = np.asarray(current_counts, dtype=np.int64)
    reference_counts = np.asarray(summary.counts, dtype=np.int64)
    if isinstance(summary, CategoricalSummary):
        reference_counts = np.append(reference_counts, summary.other)
    rows = int(current_counts.sum())
    if rows < thresholds.min_rows or summary.count < thresholds.min_rows:
        return FeatureDrift(summary.name, rows, NOT_ENOUGH_DATA)
    value = psi(reference_counts, current_counts, thresholds.psi_epsilon)
    band = (
        "stable"
        if value < thresholds.psi_stable
        else "shifted"
        if value > thresholds.psi_shifted
        else "moderate"
    )
    method: Method
    p_value: float | None = None
    if summary.count > thresholds.large_reference:
        if isinstance(summary, NumericSummary):
            method = "wasserstein"
            statistic = normalised_wasserstein(summary, current_counts)
        else:
            method = "jensen-shannon"
            statistic = jensen_shannon(reference_counts, current_counts)
        drifted = statistic >= thresholds.distance
    else:
        if isinstance(summary, NumericSummary) and raw is not None:
            method = "ks"
            statistic, p_value = ks_two_sample(*raw)
        else:
            method = "chi-square"
            statistic, p_value, _ = chi_square_homogeneity(
                reference_counts, current_counts
            )
        drifted = p_value < thresholds.p_value
    return FeatureDrift(
        summary.name,
        rows,
        DRIFTED if drifted else STABLE,
        psi=value,
        psi_band=band,
        method=method,
        statistic=statistic,
        p_value=p_value,
    )


def output_drift(
    reference_predictions: Column,
    current_predictions: Column,
    kind: Kind = "categorical",
    thresholds: DriftThresholds = DEFAULT_THRESHOLDS,
) -> FeatureDrift:
    """One version's prediction mix against another version's, on the same rules.

    Against the baseline's label shares, use ``feature_drift(baseline.label, ...)``.
    """
    reference = np.asarray(reference_predictions)
    summary = summarise_column(
        reference, "prediction", kind, top_values=OUTPUT_TOP_VALUES
    )
    return feature_drift(summary, current_predictions, reference, thresholds)


def psi(
    reference_counts: npt.ArrayLike,
    current_counts: npt.ArrayLike,
    epsilon: float = DEFAULT_THRESHOLDS.psi_epsilon,
) -> float:
    """The population stability index of two count vectors over the same buckets."""
    reference = _shares(reference_counts, epsilon)
    current = _shares(current_counts, epsilon)
    return float(np.sum((current - reference) * np.log(current / reference)))


def _shares(counts: npt.ArrayLike, epsilon: float) -> FloatArray:
    array = np.asarray(counts, dtype=np.float64)
    shares = array / array.sum()
    return np.where(shares == 0, epsilon, shares)


def ks_two_sample(
    reference: npt.ArrayLike, current: npt.ArrayLike
) -> tuple[float, float]:
    """The two-sample Kolmogorov-Smirnov statistic D and its two-sided p-value.

    D is the largest distance between the two empirical CDFs (NaN left out), as
    scipy's ``ks_2samp``. The p-value is the Kolmogorov distribution's tail at
    ``(sqrt(m) + 0.12 + 0.11 / sqrt(m)) * D``, ``m = n1 n2 / (n1 + n2)`` (Stephens'
    correction, Numerical Recipes 14.3): close to the exact value from about 20
    rows a side. Raises ValueError when a side is empty.
    """
    first = _finite_sorted(reference)
    second = _finite_sorted(current)
    if first.size == 0 or second.size == 0:
        raise ValueError("the KS test needs values on both sides")
    both = np.concatenate([first, second])
    distance = np.abs(
        np.searchsorted(first, both, side="right") / first.size
        - np.searchsorted(second, both, side="right") / second.size
    )
    statistic = float(distance.max())
    effective = math.sqrt(first.size * second.size / (first.size + second.size))
    return statistic, kolmogorov_sf((effective + 0.12 + 0.11 / effective) * statistic)


def _finite_sorted(values: npt.ArrayLike) -> FloatArray:
    array = np.asarray(values, dtype=np.float64).ravel()
    return np.sort(array[~np.isnan(array)])


def chi_square_homogeneity(
    reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike
) -> tuple[float, float, int]:
    """Pearson's chi-square test that two count vectors share one distribution.

    Buckets empty on both sides are dropped. Returns (statistic, p-value,
    degrees of freedom); with fewer than two buckets left, (0, 1, 0).
    """
    table = np.vstack(
        [
            np.asarray(reference_counts, np.float64),
            np.asarray(current_counts, np.float64),
        ]
    )
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0, 0
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    degrees = table.shape[1] - 1
    return statistic, chi2_sf(statistic, degrees), degrees


def jensen_shannon(
    reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike
) -> float:
    """The Jensen-Shannon distance (natural log) between two count vectors' shares."""
    reference = _shares(reference_counts, 0.0)
    current = _shares(current_counts, 0.0)
    middle = (reference + current) / 2

    def divergence(shares: FloatArray) -> float:
        present = shares > 0
        return float(
            np.sum(shares[present] * np.log(shares[present] / middle[present]))
        )

    return math.sqrt(max(0.0, (divergence(reference) + divergence(current)) / 2))


def normalised_wasserstein(
    summary: NumericSummary, current_counts: npt.ArrayLike
) -> float:
    """The Wasserstein-1 distance on the bins over the reference's standard deviation.

    Values are taken as spread evenly within their bin, with the outer bins cut to
    the training range: the integral of |F_reference - F_current| between the
    bins' edges, where both CDFs are piecewise linear. A constant reference
    (one bin) sees no difference: 0.
    """
    edges = np.asarray(summary.edges, dtype=np.float64)
    if len(summary.counts) < 2 or not summary.std:
        return 0.0
    gap = np.concatenate(
        [
            [0.0],
            np.cumsum(_shares(summary.counts, 0.0))
            - np.cumsum(_shares(current_counts, 0.0)),
        ]
    )
    gap[-1] = 0.0
    start, end = gap[:-1], gap[1:]
    widths = np.diff(edges)
    magnitude = np.abs(start) + np.abs(end)
    same_sign = start * end >= 0
    areas = np.where(
        same_sign,
        widths * magnitude / 2,
        widths * (start**2 + end**2) / (2 * np.where(magnitude > 0, magnitude, 1.0)),
    )
    return float(areas.sum() / summary.std)
