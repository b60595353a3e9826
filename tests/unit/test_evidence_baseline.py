"""The training baseline (chalicelib.evidence.baseline): statistics, the document
format, its size and every refusal."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from chalicelib.evidence.baseline import (
    Baseline,
    CategoricalSummary,
    InvalidBaselineError,
    Kind,
    NumericSummary,
    compute_baseline,
    summarise_column,
)

NAMES = [f"feature_{index}" for index in range(30)]


def test_numeric_columns_get_moments_and_quantile_bins() -> None:
    rng = np.random.default_rng(7)
    sample = rng.normal(5.0, 2.0, size=(1000, 2))
    sample[[3, 50], 0] = np.nan
    baseline = compute_baseline(sample, ["a", "b"], ["numeric", "numeric"])

    summary = baseline.feature("a")
    present = sample[~np.isnan(sample[:, 0]), 0]
    assert isinstance(summary, NumericSummary)
    assert (baseline.rows, summary.count, summary.missing) == (1000, 998, 2)
    assert summary.mean == pytest.approx(present.mean())
    assert summary.std == pytest.approx(present.std(ddof=1))
    assert (summary.minimum, summary.maximum) == (present.min(), present.max())
    assert summary.edges == tuple(np.quantile(present, np.linspace(0, 1, 11)))
    assert sum(summary.counts) == 998
    assert all(99 <= count <= 101 for count in summary.counts)


def test_tied_edges_are_merged_and_outer_bins_are_open() -> None:
    # Deciles of six 0s, two 1s, a 2 and a 3: 0 (six times), 0.4, 1, 1.2, 2.1, 3.
    summary = summarise_column([0, 0, 0, 0, 0, 0, 1, 1, 2, 3], "x", "numeric")
    assert isinstance(summary, NumericSummary)
    assert summary.edges == pytest.approx((0.0, 0.4, 1.0, 1.2, 2.1, 3.0))
    assert summary.counts == (6, 0, 2, 1, 1)
    assert list(summary.bin_counts([-5.0, 0.5, 2.05, 3.0, 99.0, math.nan])) == [
        1,
        1,
        0,
        1,
        2,
    ]


def test_a_constant_column_has_one_bin() -> None:
    summary = summarise_column([4.0] * 5, "x", "numeric")
    assert isinstance(summary, NumericSummary)
    assert (summary.edges, summary.counts, summary.std) == ((4.0, 4.0), (5,), 0.0)
    assert list(summary.bin_counts([1.0, 4.0, 9.0])) == [3]


def test_an_empty_numeric_column_has_no_figures() -> None:
    summary = summarise_column([math.nan, None], "x", "numeric")
    assert summary == NumericSummary("x", 0, 2, None, None, None, None, (), ())


def test_categories_keep_their_top_values_and_an_other_bucket() -> None:
    values = ["red"] * 5 + ["green"] * 3 + ["blue"] * 2 + ["pink", None, math.nan]
    summary = summarise_column(
        np.array(values, dtype=object), "colour", "categorical", top_values=2
    )
    assert summary == CategoricalSummary(
        "colour", 11, 2, ("red", "green"), (5, 3), other=3
    )
    assert list(summary.bucket_counts(["green", "purple", None, 7])) == [0, 1, 2]


def test_the_label_is_summarised_like_a_feature() -> None:
    baseline = compute_baseline(
        [[1.0, 2.0, 3.0, 4.0]], ["x"], ["numeric"], labels=[0, 1, 1, 2]
    )
    assert baseline.label == CategoricalSummary(
        "label", 4, 0, ("1", "0", "2"), (2, 1, 1), other=0
    )


def test_a_document_round_trips_through_json() -> None:
    rng = np.random.default_rng(3)
    columns = [rng.normal(size=200), rng.choice(["a", "b", "c"], 200)]
    baseline = compute_baseline(
        columns,
        ["x", "y"],
        ["numeric", "categorical"],
        labels=rng.random(200),
        label_kind="numeric",
    )
    document = json.loads(json.dumps(baseline.to_json()))
    assert document["format"] == 1
    assert [feature["kind"] for feature in document["features"]] == [
        "numeric",
        "categorical",
    ]
    assert Baseline.from_json(document) == baseline


@pytest.mark.parametrize("kind", ["numeric", "categorical"])
def test_thirty_features_fit_in_twenty_kilobytes(kind: Kind) -> None:
    rng = np.random.default_rng(11)
    if kind == "numeric":
        columns: list[Any] = list(rng.normal(size=(10_000, 30)).T * 1000)
    else:
        columns = [rng.choice([f"value-{n}" for n in range(50)], 10_000) for _ in NAMES]
    baseline = compute_baseline(
        columns,
        NAMES,
        [kind] * 30,
        labels=rng.integers(0, 3, 10_000),
    )
    assert 8_000 < len(json.dumps(baseline.to_json())) < 20_000


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (([[1.0]], ["a", "b"], ["numeric"]), "1 columns, 2 names and 1 kinds"),
        (
            ([[1.0], [1.0, 2.0]], ["a", "b"], ["numeric"] * 2),
            "different lengths: [1, 2]",
        ),
        ((np.zeros(3), ["a"], ["numeric"]), "a sample array must be 2-D, not 1-D"),
        (
            ([["x", "1"]], ["a"], ["numeric"]),
            "feature 'a' is numeric: could not convert",
        ),
        (([[1.0]], ["a"], ["ordinal"]), "feature 'a' has unknown kind 'ordinal'"),
    ],
)
def test_a_bad_sample_is_refused(arguments: tuple[Any, ...], message: str) -> None:
    with pytest.raises(InvalidBaselineError, match=r"^invalid baseline: ") as caught:
        compute_baseline(*arguments)
    assert message in str(caught.value)


def test_labels_must_match_the_rows() -> None:
    with pytest.raises(InvalidBaselineError, match="3 labels for 2 rows"):
        compute_baseline([[1.0, 2.0]], ["a"], ["numeric"], labels=[1, 2, 3])


def valid_document() -> dict[str, Any]:
    return compute_baseline(
        [[1.0, 2.0, 3.0], ["a", "b", "a"]],
        ["x", "y"],
        ["numeric", "categorical"],
        bins=3,
    ).to_json()


def broken(path: str, value: Any) -> dict[str, Any]:
    document = valid_document()
    *parents, last = path.split(".")
    target: Any = document
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    target[last] = value
    return document


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "the document must be an object"),
        ({"format": 2}, "format 2 is not supported, expected 1"),
        (broken("rows", -1), "the document: 'rows' must be a non-negative integer"),
        (broken("features", {}), "'features' must be a list"),
        (
            broken("features.0.name", ""),
            "features[0]: 'name' must be a non-empty string",
        ),
        (
            broken("features.0.count", 2),
            "features[0] ('x'): count 2 and missing 0 do not add up to 3 rows",
        ),
        (
            broken("features.0.kind", "ordinal"),
            "features[0] ('x'): unknown kind 'ordinal'",
        ),
        (
            broken("features.0.edges", [1.0, 3.0, 2.0, 4.0]),
            "features[0] ('x'): edges must increase",
        ),
        (
            broken("features.0.edges", [1.0, 2.0]),
            "features[0] ('x'): edges and counts do not match count",
        ),
        (
            broken("features.0.edges", [1.0, math.nan, 2.0, 3.0]),
            "features[0] ('x'): 'edges' must be a list of float",
        ),
        (
            broken("features.0.counts", [1, 1, -1, 2]),
            "features[0] ('x'): 'counts' must be a list of int",
        ),
        (
            broken("features.0.mean", None),
            "features[0] ('x'): "
            "mean, std, min and max are null exactly when count is 0",
        ),
        (
            broken("features.0.std", "wide"),
            "features[0] ('x'): 'std' must be a finite number or null",
        ),
        (
            broken("features.1.values", ["a", "a"]),
            "features[1] ('y'): 'values' must be distinct, one per count",
        ),
        (
            broken("features.1.other", 1),
            "features[1] ('y'): counts and other do not add up to count",
        ),
        (broken("features.1.name", "x"), "feature 'x' appears twice"),
        (broken("label", "yes"), "label must be an object"),
    ],
)
def test_a_malformed_document_is_refused_with_its_reason(
    document: object, message: str
) -> None:
    with pytest.raises(InvalidBaselineError) as caught:
        Baseline.from_json(document)
    assert str(caught.value) == f"invalid baseline: {message}"
