"""``turnout report`` on a crafted capture and label set with known answers."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import click
import numpy as np
import pytest
from click.testing import CliRunner

from chalicelib.aliases.store import AliasStore
from chalicelib.evidence.baseline import compute_baseline
from chalicelib.evidence.sequential import Sample, compare_means
from chalicelib.registry.versions import Registry
from tests.demo_support import MODEL_BUCKET
from tests.report_support import (
    START,
    capture_line,
    minutes,
    put_capture,
    put_labels,
)
from turnout.cli.report import report
from turnout.report.compute import baseline_key, compute_report
from turnout.report.render_text import render_text

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CAPTURE_BUCKET = "turnout-capture-report-test"
SINCE, UNTIL = START, START + minutes(60)


def wilson(successes: int, trials: int) -> dict[str, float]:
    """The Wilson score interval, written out from the formula."""
    z = 1.959963984540054
    share = successes / trials
    centre = (share + z * z / (2 * trials)) / (1 + z * z / trials)
    half = (
        z
        * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials))
        / (1 + z * z / trials)
    )
    return {"value": share, "low": centre - half, "high": centre + half}


def row(index: int) -> list[float]:
    return [5.0 + (index % 10) / 10, 3.0 + (index % 7) / 10, 1.5, 0.2]


@pytest.fixture
def crafted(s3: S3Client, demo_registry: Registry, aliases: AliasStore) -> S3Client:
    """iris@prod split 1=50 2=50; 200 captured requests each in the hour from
    10:00, all labelled at 10:30: version 1 right on 120, version 2 on 190 (50 of
    them labelled by the caller's own id). Five requests at 09:58 lie outside the
    window; their labels, seven unknown ids and a second label for an id (the
    first received wins) are not matched."""
    aliases.set_routing("iris", "prod", {1: 50, 2: 50}, actor="tests")
    s3.create_bucket(Bucket=CAPTURE_BUCKET)
    baseline = compute_baseline(
        np.array([row(index) for index in range(200)]),
        [f"float_input_{index}" for index in range(4)],
        ["numeric"] * 4,
        labels=[0] * 120 + [1] * 80,
    )
    s3.put_object(
        Bucket=MODEL_BUCKET,
        Key=baseline_key("iris", 1),
        Body=json.dumps(baseline.to_json()).encode(),
    )
    labels: list[tuple[str, Any]] = []
    version_1, version_2 = [], []
    for index in range(200):
        at = START + minutes(index * 0.25)
        version_1.append(capture_line(f"v1-{index}", 1, at, [row(index)], [0]))
        labels.append((f"v1-{index}", 0 if index < 120 else 1))
        caller = f"caller-{index}" if index < 50 else None
        predicted = 0 if index < 100 else 1
        version_2.append(
            capture_line(
                f"v2-{index}",
                2,
                at,
                [row(index)],
                [predicted],
                latency_ms=20.0,
                caller_id=caller,
            )
        )
        right = predicted if index < 190 else 2
        labels.append((caller or f"v2-{index}", right))
    early = [
        capture_line(f"early-{index}", 1, START - minutes(2), [row(0)], [0])
        for index in range(5)
    ]
    put_capture(s3, CAPTURE_BUCKET, early, "early")
    for part in range(4):
        chunk = slice(part * 50, part * 50 + 50)
        put_capture(
            s3, CAPTURE_BUCKET, version_1[chunk], f"v1-{part}", with_summary=part < 2
        )
        put_capture(
            s3, CAPTURE_BUCKET, version_2[chunk], f"v2-{part}", with_summary=part > 1
        )
    labels += [(f"early-{index}", 0) for index in range(5)]
    labels += [(f"unknown-{index}", 1) for index in range(7)]
    put_labels(s3, CAPTURE_BUCKET, labels[:250], START + minutes(30), "a")
    put_labels(s3, CAPTURE_BUCKET, labels[250:], START + minutes(31), "b")
    put_labels(s3, CAPTURE_BUCKET, [("v1-0", 1)], START + minutes(40), "late")
    return s3


def test_the_report_gives_the_known_figures_and_verdict(crafted: S3Client) -> None:
    found = compute_report(
        crafted,
        model_bucket=MODEL_BUCKET,
        capture_bucket=CAPTURE_BUCKET,
        model="iris",
        alias="prod",
        since=SINCE,
        until=UNTIL,
    )
    assert found["model"] == "iris" and found["alias"] == "prod"
    assert (found["since"], found["until"]) == (SINCE.isoformat(), UNTIL.isoformat())
    versions = [
        {key: entry[key] for key in ("version", "weight", "requests", "errors")}
        | {key: entry[key] for key in ("labelled", "match_rate", "accuracy")}
        for entry in found["versions"]
    ]
    assert versions == [
        {
            "version": "1",
            "weight": 50.0,
            "requests": 200,
            "errors": 0,
            "labelled": 200,
            "match_rate": 1.0,
            "accuracy": pytest.approx(wilson(120, 200)),
        },
        {
            "version": "2",
            "weight": 50.0,
            "requests": 200,
            "errors": 0,
            "labelled": 200,
            "match_rate": 1.0,
            "accuracy": pytest.approx(wilson(190, 200)),
        },
    ]
    sequence = compare_means(Sample.proportion(120, 200), Sample.proportion(190, 200))
    assert found["comparisons"] == [
        {
            "version": "2",
            "control": "1",
            "metric": "accuracy",
            "difference": pytest.approx(0.35),
            "low": sequence.low,
            "high": sequence.high,
            "p_value": sequence.p_value,
            "verdict": "version 2 is ahead on accuracy: 0.95 against 0.60 "
            f"(difference 0.35, 95% confidence sequence {sequence.low:.2f} to "
            f"{sequence.high:.2f}; 200 and 200 labelled)",
            "outcome": "ahead",
        }
    ]
    assert found["srm"]["counts"] == {"1": 200, "2": 200}
    assert found["srm"]["blocked"] is False
    assert found["labels"] == {"received": 412, "unmatched": 12}
    assert found["versions"][0]["latency_ms"]["p50"] == pytest.approx(5.0, rel=0.06)
    assert found["versions"][1]["latency_ms"]["p99"] == pytest.approx(20.0, rel=0.06)
    assert found["versions"][1]["prediction_mix"] == {"0": 100, "1": 100}
    assert found["versions"][1]["scores"]["confusion"] == [
        [100, 0, 0],
        [0, 90, 0],
        [0, 10, 0],
    ]


def test_drift_is_measured_against_each_versions_own_baseline(
    crafted: S3Client,
) -> None:
    found = compute_report(
        crafted,
        model_bucket=MODEL_BUCKET,
        capture_bucket=CAPTURE_BUCKET,
        model="iris",
        alias="prod",
        since=SINCE,
        until=UNTIL,
    )
    against_baseline = {
        row["feature"]: row for row in found["drift"] if row["against"] == "baseline"
    }
    assert sorted(against_baseline) == [
        "float_input_0",
        "float_input_1",
        "float_input_2",
        "float_input_3",
        "prediction",
    ]
    assert {row["version"] for row in against_baseline.values()} == {"1"}
    # A constant column falls in one bin, whichever bins counted it (half of the
    # objects have summaries on fixed bins, half are summarised on its bins).
    assert against_baseline["float_input_2"]["psi"] == pytest.approx(0.0)
    assert against_baseline["float_input_2"]["status"] == "stable"
    # Version 1 always predicts 0; its baseline's labels are 60 % 0.
    assert against_baseline["prediction"]["status"] == "drifted"
    assert all(row["rows"] == 200 for row in against_baseline.values())
    (outputs,) = [row for row in found["drift"] if row["against"] == "version 1"]
    assert (outputs["version"], outputs["feature"], outputs["status"]) == (
        "2",
        "prediction",
        "drifted",
    )


def test_turnout_report_json_prints_the_report(
    crafted: S3Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TURNOUT_MODEL_BUCKET", MODEL_BUCKET)
    arguments = ["iris", "--since", SINCE.isoformat(), "--until", UNTIL.isoformat()]
    arguments += ["--capture-bucket", CAPTURE_BUCKET, "--json"]
    result = CliRunner().invoke(report, arguments)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert [entry["version"] for entry in printed["versions"]] == ["1", "2"]
    assert printed["comparisons"][0]["verdict"].startswith(
        "version 2 is ahead on accuracy: 0.95 against 0.60"
    )


def test_turnout_report_prints_tables_and_writes_the_page(
    crafted: S3Client, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("TURNOUT_MODEL_BUCKET", MODEL_BUCKET)
    page = tmp_path / "report.html"
    arguments = ["iris", "--since", SINCE.isoformat(), "--until", UNTIL.isoformat()]
    arguments += ["--capture-bucket", CAPTURE_BUCKET, "--html", str(page)]
    result = CliRunner().invoke(report, arguments)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[2].split() == [
        "version", "weight", "requests", "errors", "p50", "ms", "p95", "ms",
        "p99", "ms", "labelled", "matched", "accuracy", "interval",
    ]  # fmt: skip
    assert "  version 2 is ahead on accuracy: 0.95 against 0.60" in result.output
    assert lines[-1] == f"wrote {page}"
    assert page.read_text().startswith("<!DOCTYPE html>")


def test_an_unreadable_window_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(
        report, ["iris", "--since", "yesterday", "--capture-bucket", "b"]
    )
    assert result.exit_code == 2
    assert "'yesterday' is neither a duration (24h, 30m, 7d) nor an ISO 8601 time" in (
        result.output
    )


def test_the_text_report_aligns_its_columns(crafted: S3Client) -> None:
    found = compute_report(
        crafted,
        model_bucket=MODEL_BUCKET,
        capture_bucket=CAPTURE_BUCKET,
        model="iris",
        alias="prod",
        since=SINCE,
        until=UNTIL,
    )
    header, first, second = render_text(found).splitlines()[2:5]
    assert len(header) == len(first) == len(second)


def test_without_labels_only_the_summaries_are_read(
    s3: S3Client, demo_registry: Registry, aliases: AliasStore
) -> None:
    aliases.set_routing("iris", "prod", {1: 50, 2: 50}, actor="tests")
    s3.create_bucket(Bucket=CAPTURE_BUCKET)
    for part in range(3):
        records = [
            capture_line(f"{part}-{index}", 1 + index % 2, START, [row(index)], [0])
            for index in range(40)
        ]
        put_capture(s3, CAPTURE_BUCKET, records, f"p{part}", with_summary=part != 1)
    found = compute_report(
        s3,
        model_bucket=MODEL_BUCKET,
        capture_bucket=CAPTURE_BUCKET,
        model="iris",
        alias="prod",
        since=SINCE,
        until=UNTIL,
    )
    assert found["read"] == {"capture_objects": 3, "records": 40}
    assert [entry["requests"] for entry in found["versions"]] == [60, 60]
    assert [entry["labelled"] for entry in found["versions"]] == [0, 0]
    assert found["versions"][0]["accuracy"] == {
        "value": None,
        "low": None,
        "high": None,
    }
    assert found["comparisons"][0]["verdict"] == (
        "not enough evidence yet: version 2 has no labelled requests"
    )


def test_registered_in_a_group_it_uses_the_groups_session(crafted: S3Client) -> None:
    """As ``turnout.cli.main`` registers it: ``cli.add_command(report)``."""

    @click.group()
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def group(context: click.Context, as_json: bool) -> None:
        context.obj = SimpleNamespace(s3=crafted, bucket=MODEL_BUCKET, as_json=as_json)

    group.add_command(report)
    arguments = ["--json", "report", "iris", "--since", SINCE.isoformat()]
    arguments += ["--until", UNTIL.isoformat(), "--capture-bucket", CAPTURE_BUCKET]
    result = CliRunner().invoke(group, arguments)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["versions"][1]["labelled"] == 200


def test_with_labels_a_summarised_object_decodes_only_the_labelled_lines(
    s3: S3Client, demo_registry: Registry, aliases: AliasStore
) -> None:
    aliases.set_routing("iris", "prod", {1: 50, 2: 50}, actor="tests")
    s3.create_bucket(Bucket=CAPTURE_BUCKET)
    for part in range(2):
        records = [
            capture_line(f"{part}-{index}", 1 + index % 2, START, [row(index)], [0])
            for index in range(40)
        ]
        put_capture(s3, CAPTURE_BUCKET, records, f"p{part}", with_summary=part == 0)
    labels = [("0-1", 0), ("0-2", 1), ("1-5", 0)]
    put_labels(s3, CAPTURE_BUCKET, labels, START + minutes(5), "labels")
    found = compute_report(
        s3,
        model_bucket=MODEL_BUCKET,
        capture_bucket=CAPTURE_BUCKET,
        model="iris",
        alias="prod",
        since=SINCE,
        until=UNTIL,
    )
    assert found["read"] == {"capture_objects": 2, "records": 40 + 2}
    assert [entry["requests"] for entry in found["versions"]] == [40, 40]
    assert [entry["labelled"] for entry in found["versions"]] == [1, 2]
