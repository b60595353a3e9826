"""The report's figures from collected counts (no I/O): regressors, the sample
ratio check blocking verdicts, the control."""

from __future__ import annotations

from array import array
from datetime import timedelta

import pytest

from chalicelib.capture_summary import summarise
from chalicelib.evidence.scores import regression_scores
from tests.report_support import START, capture_line
from turnout.report.collect import Collected, Labelled
from turnout.report.figures import build_report


def requests(version: int, count: int, output: float | int) -> list[dict[str, object]]:
    records = []
    for index in range(count):
        record = capture_line(f"{version}-{index}", version, START, [[1.0, 2.0]], [0])
        record["outputs"] = {"variable": [[output]]}
        records.append(record)
    return records


def report(summary: dict[str, object], labelled: dict[str, Labelled], **weights: float):  # type: ignore[no-untyped-def]
    return build_report(
        Collected(summary, labelled, {}, 0, 0, 1, 0),
        model="diabetes",
        alias="prod",
        since=START,
        until=START + timedelta(hours=1),
        weights={version.lstrip("v"): weight for version, weight in weights.items()},
        baselines={},
    )


def errors(values: list[float]) -> Labelled:
    found = Labelled(requests=len(values), rows=len(values))
    found.errors = array("d", values)
    return found


def test_a_regressor_gets_mae_and_rmse_and_is_compared_on_mae() -> None:
    summary = summarise(requests(1, 100, 150.5) + requests(2, 100, 149.25))
    first = [10.0 + index % 5 for index in range(100)]
    second = [2.0 + (index % 5) / 2 for index in range(100)]
    found = report(summary, {"1": errors(first), "2": errors(second)}, v1=50, v2=50)
    assert found["kind"] == "regressor"
    assert found["control"] == "1"
    expected = regression_scores([0.0] * 100, second)
    version_2 = found["versions"][1]
    assert version_2["mae"] == expected.mae.to_json()
    assert version_2["rmse"] == expected.rmse.to_json()
    assert "accuracy" not in version_2
    (comparison,) = found["comparisons"]
    assert (comparison["metric"], comparison["outcome"]) == ("mae", "ahead")
    assert comparison["difference"] == pytest.approx(3.0 - 12.0)
    assert comparison["verdict"].startswith(
        "version 2 is ahead on mae: 3.00 against 12.00"
    )


def test_a_sample_ratio_mismatch_blocks_the_verdict_and_says_why() -> None:
    summary = summarise(requests(1, 300, 1) + requests(2, 100, 1))
    labelled = {"1": errors([1.0] * 300), "2": errors([0.0] * 100)}
    found = report(summary, labelled, v1=50, v2=50)
    assert found["srm"]["blocked"] is True
    (comparison,) = found["comparisons"]
    assert comparison["outcome"] == "blocked"
    assert comparison["verdict"].startswith(
        "no verdict: sample ratio mismatch: observed 1: 300 (75.0% for 50.0%), "
        "2: 100 (25.0% for 50.0%)"
    )


def test_the_control_is_the_heaviest_version_the_lowest_on_a_tie() -> None:
    summary = summarise(requests(1, 10, 1) + requests(2, 10, 1) + requests(3, 10, 1))
    assert report(summary, {}, v1=20, v2=40, v3=40)["control"] == "2"
    assert [
        c["version"] for c in report(summary, {}, v1=20, v2=40, v3=40)["comparisons"]
    ] == ["1", "3"]
