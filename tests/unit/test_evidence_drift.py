"""Drift against a baseline (chalicelib.evidence.drift): PSI by hand, the tests
against scipy, the choice of test by reference size, and too little data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp, kstwobign

from chalicelib.evidence.baseline import NumericSummary, summarise_column
from chalicelib.evidence.drift import (
    DriftThresholds,
    FeatureDrift,
    chi_square_homogeneity,
    feature_drift,
    jensen_shannon,
    ks_two_sample,
    normalised_wasserstein,
    output_drift,
    psi,
)

RELATIVE = 1e-6


def test_psi_matches_a_hand_computation() -> None:
    # Shares 0.1, 0.2, 0.3, 0.4 against a quarter each.
    expected = sum(
        (current - 0.25) * math.log(current / 0.25) for current in (0.1, 0.2, 0.3, 0.4)
    )
    assert expected == pytest.approx(0.228218, abs=1e-6)
    assert psi([25, 25, 25, 25], [10, 20, 30, 40]) == pytest.approx(expected, rel=1e-12)
    assert psi([7, 7, 7], [70, 70, 70]) == 0.0


def test_psi_counts_an_empty_bin_as_epsilon() -> None:
    expected = (0.4 - 0.5) * math.log(0.4 / 0.5) * 2 + (0.2 - 1e-4) * math.log(
        0.2 / 1e-4
    )
    assert psi([50, 50, 0], [40, 40, 20]) == pytest.approx(expected, rel=1e-12)
    assert psi([50, 50, 0], [40, 40, 20], epsilon=1e-3) < expected


@pytest.mark.parametrize(("sizes", "shift"), [((200, 150), 0.0), ((500, 300), 0.3)])
def test_ks_matches_scipy(sizes: tuple[int, int], shift: float) -> None:
    rng = np.random.default_rng(5)
    # Rounded, so there are ties, which the statistic must handle as scipy does.
    reference = np.round(rng.normal(size=sizes[0]), 1)
    current = np.round(rng.normal(shift, size=sizes[1]), 1)
    statistic, p_value = ks_two_sample(reference, current)
    exact = ks_2samp(reference, current, method="exact")
    assert statistic == pytest.approx(exact.statistic, rel=1e-12)
    effective = math.sqrt(sizes[0] * sizes[1] / sum(sizes))
    corrected = (effective + 0.12 + 0.11 / effective) * statistic
    assert p_value == pytest.approx(kstwobign.sf(corrected), rel=RELATIVE)
    assert p_value == pytest.approx(exact.pvalue, abs=0.01)


def test_ks_refuses_an_empty_side() -> None:
    with pytest.raises(ValueError, match="the KS test needs values on both sides"):
        ks_two_sample([1.0, 2.0], [math.nan])


@pytest.mark.parametrize(
    ("reference", "current"),
    [
        ([30, 50, 20], [35, 40, 25]),
        ([300, 10, 0, 90], [280, 30, 0, 120]),
        ([12, 8], [4, 16]),
    ],
)
def test_chi_square_matches_scipy(reference: list[int], current: list[int]) -> None:
    statistic, p_value, degrees = chi_square_homogeneity(reference, current)
    kept = [
        index for index in range(len(reference)) if reference[index] + current[index]
    ]
    table = np.array([[reference[i] for i in kept], [current[i] for i in kept]])
    expected = chi2_contingency(table, correction=False)
    assert statistic == pytest.approx(expected.statistic, rel=RELATIVE)
    assert p_value == pytest.approx(expected.pvalue, rel=RELATIVE)
    assert degrees == expected.dof


def test_chi_square_of_one_bucket_is_no_evidence() -> None:
    assert chi_square_homogeneity([10, 0], [5, 0]) == (0.0, 1.0, 0)


def test_jensen_shannon_matches_scipy() -> None:
    reference, current = [30, 50, 20, 0], [10, 40, 30, 20]
    assert jensen_shannon(reference, current) == pytest.approx(
        jensenshannon(reference, current), rel=RELATIVE
    )


def uniform_bins(std: float) -> NumericSummary:
    """A reference spread evenly over [0, 10] in ten bins of 100."""
    edges = tuple(float(edge) for edge in range(11))
    return NumericSummary("x", 1000, 0, 5.0, std, 0.0, 10.0, edges, (100,) * 10)


def test_wasserstein_on_bins_matches_the_hand_computation() -> None:
    # U(0, 10) against U(5, 10): the distance is the gap of their means, 2.5.
    std = 10 / math.sqrt(12)
    distance = normalised_wasserstein(uniform_bins(std), [0] * 5 + [100] * 5)
    assert distance == pytest.approx(2.5 / std, rel=1e-12)
    # Crossing CDFs: mass moved outwards from the middle.
    crossing = normalised_wasserstein(uniform_bins(1.0), [150] + [100] * 8 + [150])
    assert crossing > 0


def test_wasserstein_on_bins_is_close_to_scipy_on_fine_samples() -> None:
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(9)
    reference = rng.normal(size=50_000)
    current = rng.normal(0.3, 1.2, size=50_000)
    summary = summarise_column(reference, "x", "numeric", bins=50)
    assert isinstance(summary, NumericSummary)
    binned = normalised_wasserstein(summary, summary.bin_counts(current))
    assert binned == pytest.approx(
        wasserstein_distance(reference, current) / reference.std(ddof=1), rel=0.1
    )


def test_fewer_than_a_hundred_rows_is_not_enough_data() -> None:
    summary = summarise_column(np.arange(500.0), "x", "numeric")
    assert feature_drift(summary, np.arange(99.0)) == FeatureDrift(
        "x", 99, "not enough data"
    )
    assert (
        feature_drift(
            summary, np.arange(99.0), thresholds=DriftThresholds(min_rows=50)
        ).psi
        is not None
    )
    small = summarise_column(np.arange(50.0), "x", "numeric")
    assert feature_drift(small, np.arange(500.0)).status == "not enough data"


@pytest.mark.parametrize(
    ("kind", "reference_rows", "raw", "method"),
    [
        ("numeric", 800, True, "ks"),
        ("numeric", 800, False, "chi-square"),
        ("numeric", 5000, True, "wasserstein"),
        ("categorical", 800, False, "chi-square"),
        ("categorical", 5000, False, "jensen-shannon"),
    ],
)
def test_the_test_follows_the_reference_size(
    kind: str, reference_rows: int, raw: bool, method: str
) -> None:
    rng = np.random.default_rng(13)

    def draw(rows: int, shift: float) -> np.ndarray:
        values = rng.normal(shift, 1.0, size=rows)
        return np.round(values).astype(str) if kind == "categorical" else values

    reference = draw(reference_rows, 0.0)
    summary = summarise_column(
        reference, "x", "numeric" if kind == "numeric" else "categorical"
    )
    stable = feature_drift(summary, draw(2000, 0.0), reference if raw else None)
    shifted = feature_drift(summary, draw(2000, 1.0), reference if raw else None)
    assert (stable.method, shifted.method) == (method, method)
    assert (stable.status, shifted.status) == ("stable", "drifted")
    assert stable.psi is not None and stable.psi < 0.1 and stable.psi_band == "stable"
    assert shifted.psi is not None and shifted.psi > 0.25
    assert shifted.psi_band == "shifted"
    has_p = method in ("ks", "chi-square")
    assert (shifted.p_value is not None) == has_p


def test_thresholds_can_be_changed() -> None:
    summary = summarise_column(np.arange(5000.0), "x", "numeric")
    current = np.arange(5000.0) * 1.05
    assert feature_drift(summary, current).status == "stable"
    strict = DriftThresholds(distance=0.01)
    assert feature_drift(summary, current, thresholds=strict).status == "drifted"


def test_prediction_mix_against_the_label_shares_and_another_version() -> None:
    label = summarise_column(
        ["setosa"] * 50 + ["versicolor"] * 50 + ["virginica"] * 50,
        "label",
        "categorical",
    )
    balanced = ["setosa", "versicolor", "virginica"] * 100
    skewed = ["setosa"] * 200 + ["versicolor"] * 50 + ["virginica"] * 50
    assert feature_drift(label, balanced).status == "stable"
    against_label = feature_drift(label, skewed)
    assert against_label.status == "drifted"
    assert against_label.method == "chi-square"
    against_version = output_drift(balanced, skewed)
    assert against_version.feature == "prediction"
    assert against_version.status == "drifted"
    assert output_drift(balanced, balanced[::-1]).status == "stable"


def test_numeric_outputs_of_two_versions_use_ks() -> None:
    rng = np.random.default_rng(17)
    drift = output_drift(rng.normal(size=500), rng.normal(size=500), kind="numeric")
    assert (drift.method, drift.status) == ("ks", "stable")


def test_a_drift_entry_is_json_ready() -> None:
    entry = FeatureDrift("x", 120, "stable", 0.01, "stable", "ks", 0.1, 0.5)
    assert entry.to_json() == {
        "feature": "x",
        "rows": 120,
        "status": "stable",
        "psi": 0.01,
        "psi_band": "stable",
        "method": "ks",
        "statistic": 0.1,
        "p_value": 0.5,
    }
