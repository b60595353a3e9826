"""The report's figures from what ``collect`` read: one JSON-able dictionary.

Per version: requests, errors, latency p50/p95/p99 (from the summaries' sketch),
labelled rows and match rate (the share of its captured requests that got a
label), accuracy with its Wilson interval (classifiers; also precision, recall,
macro F1 and the confusion matrix) or MAE and RMSE with intervals (regressors),
the prediction mix and accuracy over time. Each version against the control, the
alias's heaviest (the lowest version on a tie), with the anytime-valid
confidence sequence and verdict of ``chalicelib.evidence.verdict``; the sample
ratio check against the configured weights blocks every verdict when it fails.
Drift per feature of each version's inputs against its own training baseline,
and of its predictions against the baseline's labels and the control's
predictions. Shadows: agreement on identical inputs.

A model is a regressor when its predictions are not whole numbers or text (the
summaries count them on numeric bins), a classifier otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np

from chalicelib.capture_summary import (
    OTHER,
    fixed_bin_value,
    latency_bin_value,
    latency_percentile,
)
from chalicelib.evidence.baseline import Baseline, CategoricalSummary, FeatureSummary
from chalicelib.evidence.drift import binned_drift
from chalicelib.evidence.scores import (
    classification_scores,
    regression_scores,
    wilson_interval,
)
from chalicelib.evidence.sequential import Sample, SampleRatioCheck, sample_ratio_check
from chalicelib.evidence.verdict import compare_versions, mcnemar, shadow_agreement
from turnout.report.collect import Collected, Labelled

CLASSIFIER, REGRESSOR = "classifier", "regressor"


def build_report(
    collected: Collected,
    *,
    model: str,
    alias: str,
    since: datetime,
    until: datetime,
    weights: Mapping[str, float],
    baselines: Mapping[str, Baseline],
) -> dict[str, Any]:
    """The report (its JSON form: the issue's keys and a few more)."""
    counted = collected.summary.get("versions", {})
    names = sorted(set(weights) | set(counted), key=_version_order)
    kind = (
        REGRESSOR
        if any("fixed" in counted[name]["predictions"] for name in counted)
        else CLASSIFIER
    )
    srm = _srm(counted, weights)
    control = max(names, key=lambda name: (weights.get(name, 0.0), -_rank(name)))
    versions = [
        _version(name, counted.get(name), collected.labelled.get(name), weights, kind)
        for name in names
    ]
    comparisons = [
        _comparison(name, control, collected.labelled, kind, srm)
        for name in names
        if name != control and (name in counted or weights.get(name, 0) > 0)
    ]
    return {
        "model": model,
        "alias": alias,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "kind": kind,
        "control": control,
        "versions": versions,
        "comparisons": comparisons,
        "drift": _drift(counted, baselines, control, kind),
        "srm": None if srm is None else srm.to_json(),
        "labels": {
            "received": collected.labels_read,
            "unmatched": collected.labels_unmatched,
        },
        "shadows": _shadows(collected),
        "read": {
            "capture_objects": collected.objects,
            "records": collected.records_read,
        },
    }


def _version_order(name: str) -> tuple[int, str]:
    """Numbered versions in numeric order, any other name after them."""
    return (int(name), "") if name.isdigit() else (1 << 62, name)


def _rank(name: str) -> int:
    return _version_order(name)[0]


def _srm(
    counted: Mapping[str, Any], weights: Mapping[str, float]
) -> SampleRatioCheck | None:
    if not any(weight > 0 for weight in weights.values()):
        return None
    counts = {name: int(entry["requests"]) for name, entry in counted.items()}
    return sample_ratio_check(counts, weights)


def _version(
    name: str,
    entry: Mapping[str, Any] | None,
    labelled: Labelled | None,
    weights: Mapping[str, float],
    kind: str,
) -> dict[str, Any]:
    requests = int(entry["requests"]) if entry else 0
    latency = entry["latency"] if entry else {}
    result: dict[str, Any] = {
        "version": name,
        "weight": weights.get(name, 0.0),
        "requests": requests,
        "errors": int(entry["errors"]) if entry else 0,
        "labelled": labelled.rows if labelled else 0,
        "match_rate": (labelled.requests if labelled else 0) / requests
        if requests
        else None,
        "latency_ms": {
            "p50": latency_percentile(latency, 0.50),
            "p95": latency_percentile(latency, 0.95),
            "p99": latency_percentile(latency, 0.99),
            "histogram": [
                [latency_bin_value(int(index)), count]
                for index, count in sorted(latency.items(), key=lambda i: int(i[0]))
            ],
        },
        "prediction_mix": _prediction_mix(entry["predictions"] if entry else {}),
    }
    if kind == CLASSIFIER:
        result["accuracy"] = {"value": None, "low": None, "high": None}
        if labelled and labelled.rows:
            truth, predicted = _expanded(labelled)
            scores = classification_scores(truth, predicted)
            result["accuracy"] = scores.accuracy.to_json()
            result["scores"] = scores.to_json()
    else:
        empty = {"value": None, "low": None, "high": None}
        result["mae"], result["rmse"] = empty, dict(empty)
        if labelled and len(labelled.errors):
            errors = np.frombuffer(labelled.errors, dtype=np.float64)
            scores_regression = regression_scores(np.zeros_like(errors), errors)
            result["mae"] = scores_regression.mae.to_json()
            result["rmse"] = scores_regression.rmse.to_json()
    result["over_time"] = _over_time(labelled, kind)
    return result


def _expanded(labelled: Labelled) -> tuple[np.ndarray, np.ndarray]:
    cells = list(labelled.pairs.items())
    counts = [count for _, count in cells]
    truth = np.repeat(np.array([pair[0] for pair, _ in cells], dtype=str), counts)
    predicted = np.repeat(np.array([pair[1] for pair, _ in cells], dtype=str), counts)
    return truth, predicted


def _over_time(labelled: Labelled | None, kind: str) -> list[dict[str, Any]]:
    """Cumulative accuracy (or MAE) at the end of each hour with labels."""
    points: list[dict[str, Any]] = []
    if labelled is None:
        return points
    right = total = error = 0.0
    for hour in sorted(labelled.hours):
        hits, count, errors = labelled.hours[hour]
        right, total, error = right + hits, total + count, error + errors
        if kind == CLASSIFIER:
            figures = _nulls(wilson_interval(int(right), int(total)).to_json())
        else:
            figures = {"value": error / total, "low": None, "high": None}
        points.append({"hour": hour, "labelled": int(total), **figures})
    return points


def _prediction_mix(predictions: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    mix: dict[str, int] = {}
    for value, count in predictions.get("values", {}).items():
        mix["other" if value == OTHER else value] = count
    for index, count in sorted(
        predictions.get("fixed", {}).items(), key=lambda i: int(i[0])
    ):
        mix[f"{fixed_bin_value(int(index)):.3g}"] = count
    return mix


def _comparison(
    name: str,
    control: str,
    labelled: Mapping[str, Labelled],
    kind: str,
    srm: SampleRatioCheck | None,
) -> dict[str, Any]:
    metric = "accuracy" if kind == CLASSIFIER else "mae"
    samples = {}
    for version in (name, control):
        found = labelled.get(version)
        if found is None or found.rows == 0:
            return {
                "version": name,
                "control": control,
                "metric": metric,
                "difference": None,
                "low": None,
                "high": None,
                "p_value": None,
                "verdict": f"not enough evidence yet: version {version} has no "
                "labelled requests",
                "outcome": "undecided",
            }
        if kind == CLASSIFIER:
            correct = sum(c for (truth, p), c in found.pairs.items() if truth == p)
            samples[version] = Sample.proportion(correct, found.rows)
        else:
            samples[version] = Sample.of(np.frombuffer(found.errors, dtype=np.float64))
    comparison = compare_versions(
        metric,
        name,
        samples[name],
        control,
        samples[control],
        higher_is_better=kind == CLASSIFIER,
        srm=srm,
    )
    return {**comparison.to_json(), "outcome": comparison.outcome}


def _drift(
    counted: Mapping[str, Any],
    baselines: Mapping[str, Baseline],
    control: str,
    kind: str,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in sorted(counted, key=_version_order):
        entry = counted[name]
        baseline = baselines.get(name)
        if baseline is not None:
            for summary in baseline.features:
                bins = entry["features"].get(summary.name, {})
                rows.append(_drift_row(name, summary, bins, "baseline"))
            if baseline.label is not None:
                rows.append(
                    _drift_row(name, baseline.label, entry["predictions"], "baseline")
                    | {"feature": "prediction"}
                )
        if kind == CLASSIFIER and name != control and control in counted:
            reference = counted[control]["predictions"].get("values", {})
            if reference:
                classes = tuple(sorted(reference))
                summary = CategoricalSummary(
                    "prediction",
                    sum(reference.values()),
                    0,
                    classes,
                    tuple(reference[value] for value in classes),
                    0,
                )
                rows.append(
                    _drift_row(
                        name, summary, entry["predictions"], f"version {control}"
                    )
                )
    return rows


def _drift_row(
    version: str,
    summary: FeatureSummary,
    bins: Mapping[str, Mapping[str, int]],
    against: str,
) -> dict[str, Any]:
    found = binned_drift(summary, _on_baseline_bins(summary, bins))
    return {"version": version, "against": against} | found.to_json()


def _on_baseline_bins(
    summary: FeatureSummary, bins: Mapping[str, Mapping[str, int]]
) -> np.ndarray:
    """A feature's summary counts on its baseline's bins: exact when counted on
    them, a fixed bin's count going to the baseline bin holding its middle
    otherwise."""
    if isinstance(summary, CategoricalSummary):
        position = {value: index for index, value in enumerate(summary.values)}
        counts = np.zeros(len(summary.values) + 1, dtype=np.int64)
        for value, count in bins.get("values", {}).items():
            counts[position.get(value, len(summary.values))] += count
        return counts
    counts = np.zeros(len(summary.counts), dtype=np.int64)
    for index, count in bins.get("baseline", {}).items():
        counts[int(index)] += count
    inner = np.asarray(summary.edges[1:-1])
    for index, count in bins.get("fixed", {}).items():
        middle = fixed_bin_value(int(index))
        counts[int(np.searchsorted(inner, middle, side="right"))] += count
    for value, count in bins.get("values", {}).items():
        try:
            number = float(value)
        except ValueError:
            continue
        if math.isfinite(number):
            counts[int(np.searchsorted(inner, number, side="right"))] += count
    return counts


def _shadows(collected: Collected) -> list[dict[str, Any]]:
    rows = []
    for (primary, shadow), pairs in sorted(collected.shadows.items()):
        cells = list(pairs.triples.items())
        counts = [count for _, count in cells]
        ours = np.repeat(np.array([c[0] for c, _ in cells], dtype=str), counts)
        theirs = np.repeat(np.array([c[1] for c, _ in cells], dtype=str), counts)
        labelled = [(c, n) for c, n in cells if c[2] is not None]
        found = shadow_agreement(ours, theirs)
        test = None
        if labelled:
            only_primary = sum(n for c, n in labelled if c[0] == c[2] != c[1])
            only_shadow = sum(n for c, n in labelled if c[1] == c[2] != c[0])
            result = mcnemar(only_primary, only_shadow)
            test = {
                "primary_only": result.primary_only,
                "shadow_only": result.shadow_only,
                "method": result.method,
                "statistic": result.statistic,
                "p_value": result.p_value,
            }
        rows.append(
            {
                "primary": primary,
                "shadow": shadow,
                "count": found.count,
                "agreement": found.agreement.to_json(),
                "classes": list(found.classes),
                "disagreement": [list(row) for row in found.disagreement],
                "mcnemar": test,
            }
        )
    return rows


def _nulls(figures: Mapping[str, float]) -> dict[str, float | None]:
    return {
        key: None if isinstance(value, float) and math.isnan(value) else value
        for key, value in figures.items()
    }
