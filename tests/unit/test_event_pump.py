"""The dev stack's S3 notification -> Lambda event conversion (pure)."""

from __future__ import annotations

import json
import logging

import pytest

from tools.devstack.emulator import describe_outcome
from tools.devstack.notifications import describe_event, encode_event_key, s3_events


def record(key: str, name: str = "ObjectCreated:Put") -> dict[str, object]:
    return {
        "eventSource": "aws:s3",
        "eventName": name,
        "s3": {
            "bucket": {"name": "turnout-batch-dev"},
            "object": {"key": key, "size": 8, "eTag": "abc"},
        },
    }


@pytest.mark.parametrize(
    ("moto_key", "s3_key"),
    [
        ("incoming%2Firis%2Fa+file+%281%29.csv", "incoming/iris/a+file+%281%29.csv"),
        ("incoming/iris/plain.csv", "incoming/iris/plain.csv"),
        ("incoming%2Firis%40staging%2Fx.csv", "incoming/iris%40staging/x.csv"),
        ("incoming%2Firis%2F%C3%A9t%C3%A9.csv", "incoming/iris/%C3%A9t%C3%A9.csv"),
    ],
)
def test_keys_are_encoded_as_s3_encodes_them_in_events(
    moto_key: str, s3_key: str
) -> None:
    assert encode_event_key(moto_key) == s3_key


def test_each_record_becomes_an_event_of_its_own() -> None:
    body = json.dumps(
        {
            "Records": [
                record("incoming%2Firis%2Fa.csv"),
                record(
                    "incoming%2Firis%2Fb+c.csv", "ObjectCreated:CompleteMultipartUpload"
                ),
            ]
        }
    )

    events = s3_events(body)

    assert [len(event["Records"]) for event in events] == [1, 1]
    assert [describe_event(event) for event in events] == [
        "s3://turnout-batch-dev/incoming/iris/a.csv",
        "s3://turnout-batch-dev/incoming/iris/b c.csv",
    ]
    second = events[1]["Records"][0]
    assert second["eventName"] == "ObjectCreated:CompleteMultipartUpload"
    assert second["s3"]["object"] == {
        "key": "incoming/iris/b+c.csv",
        "size": 8,
        "eTag": "abc",
    }


def test_the_test_event_s3_sends_on_configuration_is_no_event() -> None:
    body = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})

    assert s3_events(body) == []


@pytest.mark.parametrize("body", ["not json", "[1, 2]", '"text"'])
def test_a_body_that_is_not_a_json_object_is_refused(body: str) -> None:
    with pytest.raises(ValueError):
        s3_events(body)


def job(status: str, **fields: object) -> dict[str, object]:
    rows = {"read": 3, "predicted": 2, "rejected": 1}
    return {
        "action": "processed",
        "manifest": {"status": status, "rows": rows, **fields},
    }


@pytest.mark.parametrize(
    ("result", "level", "line"),
    [
        (
            job("failed", error="the file is empty"),
            logging.ERROR,
            "BATCH JOB FAILED: the file is empty",
        ),
        (
            job("partial", output={"key": "o.out"}, errors={"key": "o.errors.jsonl"}),
            logging.WARNING,
            "partial: 2 rows predicted, 1 rejected (see o.errors.jsonl)",
        ),
        (
            job("succeeded", output={"key": "o.out"}),
            logging.INFO,
            "succeeded: 2 rows predicted -> o.out",
        ),
        (
            {"action": "skipped", "reason": "already succeeded", "manifest": {}},
            logging.INFO,
            "skipped: already succeeded",
        ),
        (
            {"action": "superseded", "manifest": None},
            logging.INFO,
            "superseded by a newer upload of the file",
        ),
        (
            {"action": "lost", "manifest": None},
            logging.WARNING,
            "stopped: another delivery took the job over",
        ),
        (None, logging.INFO, "ignored (not a batch input, or gone)"),
        (
            {"action": "fanned_out", "manifest": {"progress": {"shards": 6}}},
            logging.INFO,
            "fanned out into 6 shards",
        ),
        # The shard function answers a list, one result per message.
        ([{"action": "shard_done", "index": 3}], logging.INFO, "shard 3 done"),
        (
            [{"action": "abandoned", "index": 3}],
            logging.INFO,
            "shard abandoned: its job is over or superseded",
        ),
        (
            [job("failed", error="shard 2 of 6 (bytes 0-9) failed 3 times")],
            logging.ERROR,
            "BATCH JOB FAILED: shard 2 of 6 (bytes 0-9) failed 3 times",
        ),
    ],
)
def test_a_failed_job_stands_out_in_the_pump_s_log(
    result: object, level: int, line: str
) -> None:
    assert describe_outcome(result) == (level, line)
