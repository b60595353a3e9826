"""The EMF line: parsed, checked against the specification, field by field."""

from __future__ import annotations

import io
import json
from typing import Any

import jsonschema
import numpy as np
import pytest

from chalicelib.background import BackgroundWork
from chalicelib.emf import MAX_CLASS_METRICS, MetricsLog
from chalicelib.observe import (
    BATCH,
    CLIENT_ERROR,
    REST,
    SERVER_ERROR,
    SHADOW,
    Observation,
    Observers,
    observe_batch_file,
)
from tests.emf_support import check_emf, emf_lines

NOW = 1_796_000_000.25  # seconds since the epoch
REQUEST_METRICS = [
    {"Name": "Requests", "Unit": "Count"},
    {"Name": "Rows", "Unit": "Count"},
    {"Name": "Latency", "Unit": "Milliseconds"},
    {"Name": "ModelLatency", "Unit": "Milliseconds"},
    {"Name": "ClientErrors", "Unit": "Count"},
    {"Name": "ServerErrors", "Unit": "Count"},
]


def written(*observations: Observation) -> list[dict[str, Any]]:
    stream = io.StringIO()
    log = MetricsLog(stream, wall_clock=lambda: NOW)
    for observation in observations:
        log.observe(observation)
    text = stream.getvalue()
    assert text.count("\n") == len(observations)  # one line each
    return emf_lines(text)


def answered(**changes: Any) -> Observation:
    observation = Observation(
        REST,
        "req-1",
        model="iris",
        version=2,
        alias="prod",
        routing_key="user-42",
        rows=3,
        model_ms=0.25,
        latency_ms=1.5,
        labels=np.array(["setosa", "virginica", "setosa"], dtype=object),
    )
    for name, value in changes.items():
        setattr(observation, name, value)
    return observation


def test_an_answered_request_is_one_line_of_metrics_and_log_fields() -> None:
    (line,) = written(answered())
    assert line == {
        "_aws": {
            "Timestamp": 1_796_000_000_250,
            "CloudWatchMetrics": [
                {
                    "Namespace": "Turnout",
                    "Dimensions": [
                        ["Model", "Version"],
                        ["Model", "Alias"],
                        ["Model", "Alias", "Version"],
                    ],
                    "Metrics": [
                        *REQUEST_METRICS,
                        {"Name": "Predicted_setosa", "Unit": "Count"},
                        {"Name": "Predicted_virginica", "Unit": "Count"},
                    ],
                }
            ],
        },
        "Model": "iris",
        "Version": "2",
        "Alias": "prod",
        "Requests": 1,
        "Rows": 3,
        "Latency": 1.5,
        "ModelLatency": 0.25,
        "ClientErrors": 0,
        "ServerErrors": 0,
        "Predicted_setosa": 2,
        "Predicted_virginica": 1,
        "event": "prediction",
        "source": "rest",
        "request_id": "req-1",
        "status": 200,
        "outcome": "ok",
        "routing_key_hash": "6d894aa3ee802549",
        "shadow_version": None,
        "error": None,
    }
    assert "user-42" not in json.dumps(line)


def test_a_version_named_in_the_path_has_no_alias_dimension() -> None:
    (line,) = written(answered(alias=None, labels=None))
    assert line["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Model", "Version"]]
    assert "Alias" not in line
    assert line["_aws"]["CloudWatchMetrics"][0]["Metrics"] == REQUEST_METRICS


def test_refusals_count_as_client_or_server_errors() -> None:
    client, server = written(
        answered(outcome=CLIENT_ERROR, status=400, error="bad", labels=None),
        answered(outcome=SERVER_ERROR, status=500, error="internal error", labels=None),
    )
    assert (client["ClientErrors"], client["ServerErrors"], client["status"]) == (
        1,
        0,
        400,
    )
    assert (server["ClientErrors"], server["ServerErrors"], server["error"]) == (
        0,
        1,
        "internal error",
    )


def test_a_request_no_version_answered_has_no_dimensions() -> None:
    # The model name is the caller's: as a dimension it would mint a metric for
    # any string.
    (line,) = written(
        Observation(
            REST,
            "req-2",
            model="no-such-model",
            outcome=CLIENT_ERROR,
            status=404,
            error="model 'no-such-model' does not exist",
        )
    )
    assert line["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [[]]
    assert (line["Model"], line["ClientErrors"], line["Requests"]) == (
        "no-such-model",
        1,
        1,
    )
    assert "Version" not in line


def test_predicted_classes_are_bounded_per_version() -> None:
    labels = np.arange(MAX_CLASS_METRICS + 5)
    (first, second) = written(answered(labels=labels), answered(labels=np.array([24])))
    names = [m["Name"] for m in first["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    assert len(names) == len(REQUEST_METRICS) + MAX_CLASS_METRICS + 1
    assert first["Predicted_other"] == 5
    assert first["Predicted_0"] == 1
    # A class first seen after the bound is reached stays "other".
    assert second["Predicted_other"] == 1
    assert "Predicted_24" not in second


def test_a_label_with_quotes_is_escaped() -> None:
    (line,) = written(answered(labels=np.array(['say "hi"'], dtype=object)))
    assert line['Predicted_say "hi"'] == 1


def test_a_shadow_run_is_counted_against_the_shadow_version() -> None:
    (line,) = written(
        Observation(
            SHADOW,
            "req-1",
            model="iris",
            version=2,
            alias="prod",
            primary_version=1,
            rows=4,
            latency_ms=2.0,
            agreement=0.75,
        )
    )
    assert line == {
        "_aws": {
            "Timestamp": 1_796_000_000_250,
            "CloudWatchMetrics": [
                {
                    "Namespace": "Turnout",
                    "Dimensions": [
                        ["Model", "Version"],
                        ["Model", "Alias"],
                        ["Model", "Alias", "Version"],
                    ],
                    "Metrics": [
                        {"Name": "ShadowRuns", "Unit": "Count"},
                        {"Name": "ShadowLatency", "Unit": "Milliseconds"},
                        {"Name": "ShadowErrors", "Unit": "Count"},
                        {"Name": "ShadowDisagreement", "Unit": "Percent"},
                    ],
                }
            ],
        },
        "Model": "iris",
        "Version": "2",
        "Alias": "prod",
        "ShadowRuns": 1,
        "ShadowLatency": 2.0,
        "ShadowErrors": 0,
        "ShadowDisagreement": 25.0,
        "event": "shadow",
        "source": "shadow",
        "request_id": "req-1",
        "primary_version": 1,
        "rows": 4,
        "outcome": "ok",
        "error": None,
    }


def test_a_batch_file_is_observed_from_its_final_manifest() -> None:
    manifest = {
        "status": "partial",
        "model": "iris",
        "alias": "prod",
        "version": 1,
        "rows": {"read": 10, "predicted": 8, "rejected": 2},
        "run_id": "run-9",
        "seconds": 1.25,
    }
    result = {"action": "processed", "manifest": manifest}
    stream = io.StringIO()
    log = MetricsLog(stream, wall_clock=lambda: NOW)
    assert observe_batch_file(Observers([log]), result) is result
    (line,) = emf_lines(stream.getvalue())
    directive = line["_aws"]["CloudWatchMetrics"][0]
    assert directive["Dimensions"] == [
        ["Model", "Version"],
        ["Model", "Alias"],
        ["Model", "Alias", "Version"],
    ]
    assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == {
        "BatchFiles": "Count",
        "BatchRowsRead": "Count",
        "BatchRowsPredicted": "Count",
        "BatchRowsRejected": "Count",
        "BatchSeconds": "Seconds",
        "BatchFailures": "Count",
    }
    assert {key: line[key] for key in directive_members(directive)} == {
        "BatchFiles": 1,
        "BatchRowsRead": 10,
        "BatchRowsPredicted": 8,
        "BatchRowsRejected": 2,
        "BatchSeconds": 1.25,
        "BatchFailures": 0,
    }
    assert (line["source"], line["request_id"], line["status"]) == (
        BATCH,
        "run-9",
        "partial",
    )


def directive_members(directive: dict[str, Any]) -> list[str]:
    return [metric["Name"] for metric in directive["Metrics"]]


def test_skipped_batch_uploads_are_not_observed() -> None:
    stream = io.StringIO()
    observers = Observers([MetricsLog(stream)])
    skipped = {"action": "skipped", "reason": "done", "manifest": None}
    assert observe_batch_file(observers, skipped) is skipped
    assert stream.getvalue() == ""


def test_a_refused_capture_write_is_counted() -> None:
    stream = io.StringIO()
    MetricsLog(stream, wall_clock=lambda: NOW).capture_failed(
        "iris", "prod", 7, "AccessDenied"
    )
    (line,) = emf_lines(stream.getvalue())
    assert line["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Model", "Alias"]]
    assert (line["CaptureErrors"], line["CaptureRecordsLost"], line["error"]) == (
        1,
        7,
        "AccessDenied",
    )


def test_late_and_lost_evidence_is_counted() -> None:
    stream = io.StringIO()
    log = MetricsLog(stream, wall_clock=lambda: NOW)
    log.capture_late("iris", "prod", 3)
    log.feedback_failed("iris", 5, "AccessDenied")
    log.feedback_late("iris", 2)
    late, failed, labels_late = emf_lines(stream.getvalue())
    dimensions = [line["_aws"]["CloudWatchMetrics"][0]["Dimensions"] for line in
                  (late, failed, labels_late)]  # fmt: skip
    assert dimensions == [[["Model", "Alias"]], [["Model"]], [["Model"]]]
    assert (late["event"], late["CaptureRecordsLate"]) == ("capture_late", 3)
    assert (failed["FeedbackErrors"], failed["FeedbackRecordsLost"]) == (1, 5)
    assert failed["error"] == "AccessDenied"
    assert labels_late["FeedbackRecordsLate"] == 2


def test_on_lambda_the_line_is_written_after_the_response() -> None:
    stream = io.StringIO()
    work = BackgroundWork(deferred=True)
    log = MetricsLog(stream, wall_clock=lambda: NOW, work=work)
    log.observe(answered())
    assert stream.getvalue() == ""
    assert work.run_pending() == 1
    (line,) = emf_lines(stream.getvalue())
    # Stamped when observed, not when written.
    assert (line["request_id"], line["_aws"]["Timestamp"]) == (
        "req-1",
        1_796_000_000_250,
    )


@pytest.mark.parametrize(
    "broken",
    [
        # a dimension with no root member
        lambda d: d.pop("Alias"),
        # a metric with no value
        lambda d: d.pop("Rows"),
        # a dimension value that is not a string
        lambda d: d.update(Version=2),
        # a unit CloudWatch does not know
        lambda d: d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0].update(Unit="Rows"),
        # more than 100 metrics in one directive
        lambda d: d["_aws"]["CloudWatchMetrics"][0]["Metrics"].extend(
            [{"Name": f"M{i}"} for i in range(100)]
        ),
    ],
)
def test_the_specification_check_refuses_broken_documents(broken: Any) -> None:
    (line,) = written(answered())
    broken(line)
    with pytest.raises((AssertionError, jsonschema.ValidationError)):
        check_emf(line)
