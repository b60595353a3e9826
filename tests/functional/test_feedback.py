"""Ground truth: labels posted to ``/models/{name}/feedback`` or uploaded as a
labels file, read back from the capture bucket; and the caller's own ids that
captured requests carry, by which labels may name them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

import pytest
from chalice.test import Client, HTTPResponse

from chalicelib import wiring
from chalicelib.aliases.document import Capture
from chalicelib.aliases.store import AliasStore
from chalicelib.feedback import MAX_ID_CHARS, MAX_LABEL_DEPTH
from chalicelib.record_buffer import read_records
from tests.demo_support import BATCH_BUCKET
from tests.functional.rest_support import (
    IRIS_ROWS,
    post_json,
    serving_client,
    v2_request,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CAPTURE_BUCKET = "turnout-capture-dev"


@pytest.fixture
def client(request: pytest.FixtureRequest, s3: S3Client) -> Iterator[Client]:
    s3.create_bucket(Bucket=CAPTURE_BUCKET)
    yield from serving_client(
        request, capture_bucket=CAPTURE_BUCKET, capture_flush_records=1000
    )


def stored(s3: S3Client, prefix: str) -> dict[str, list[dict[str, Any]]]:
    """Every records object's records under ``prefix`` once the buffers are
    written (the summaries written next to capture objects left out)."""
    wiring.container().flush_evidence()
    wiring.container().wait_for_background_work()
    listing = s3.list_objects_v2(Bucket=CAPTURE_BUCKET, Prefix=prefix)
    return {
        item["Key"]: [
            dict(record)
            for record in read_records(
                s3.get_object(Bucket=CAPTURE_BUCKET, Key=item["Key"])["Body"].read()
            )
        ]
        for item in listing.get("Contents", [])
        if item["Key"].endswith(".jsonl.gz")
    }


def send(client: Client, document: Any, model: str = "iris") -> HTTPResponse:
    return post_json(client, f"/models/{model}/feedback", document)


def test_labels_are_accepted_and_filed_under_the_hour_they_arrived(
    client: Client, s3: S3Client
) -> None:
    entries: list[dict[str, Any]] = [
        {"id": "a1", "label": 2},
        {"id": "caller-7", "label": ["setosa", "virginica"]},
        {"id": "never-seen", "label": [[0.5, 1.5]]},
        {"id": "b", "label": True},
    ]
    answer = send(client, {"feedback": entries})
    assert (answer.status_code, answer.json_body) == (200, {"accepted": 4})
    assert answer.headers["X-Request-Id"]
    ((key, records),) = stored(s3, "feedback/").items()
    received = records[0]["received_at"]
    hour = datetime.fromisoformat(received).astimezone(UTC)
    assert key.startswith(f"feedback/iris/{hour:%Y/%m/%d/%H}/{hour:%Y%m%dT%H}")
    assert key.endswith(".jsonl.gz")
    assert received.endswith("+00:00")
    assert records == [
        {**entry, "received_at": received, "source": "rest"} for entry in entries
    ]


LONG_ID = "x" * (MAX_ID_CHARS + 1)
DEEP = [[[1]]]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], 'body: expected an object {"feedback": [...]}'),
        ({}, "feedback: missing"),
        ({"feedback": {}}, "feedback: expected a list of {id, label} objects"),
        ({"feedback": []}, "feedback: empty; send at least one entry"),
        ({"feedback": [], "extra": 1}, "extra: unknown field"),
        ({"feedback": [{"id": "a", "label": 1}, 3]},
         "feedback[1]: expected an object with id and label"),
        ({"feedback": [{"id": "a", "label": 1}, {"label": 1}]},
         "feedback[1].id: missing"),
        ({"feedback": [{"id": 5, "label": 1}]}, "feedback[0].id: expected a string"),
        ({"feedback": [{"id": "", "label": 1}]}, "feedback[0].id: empty"),
        ({"feedback": [{"id": LONG_ID, "label": 1}]},
         f"feedback[0].id: {MAX_ID_CHARS + 1} characters, at most {MAX_ID_CHARS}"),
        ({"feedback": [{"id": "a", "label": 1}] * 3 + [{"id": "a"}]},
         "feedback[3].label: missing"),
        ({"feedback": [{"id": "a", "label": None}]},
         "feedback[0].label: null, expected a string, number or boolean, or a list"),
        ({"feedback": [{"id": "a", "label": {"k": 1}}]},
         "feedback[0].label: dict, expected a string, number or boolean, or a list"),
        ({"feedback": [{"id": "a", "label": DEEP}]},
         f"feedback[0].label: nested more than {MAX_LABEL_DEPTH} lists deep"),
        ({"feedback": [{"id": "a", "label": []}]}, "feedback[0].label: an empty list"),
        ({"feedback": [{"id": "a", "label": "s" * 257}]},
         "feedback[0].label: a string of 257 characters, at most 256"),
        ({"feedback": [{"id": "a", "label": 1, "lable": 2}]},
         "feedback[0].lable: unknown field"),
    ],
)  # fmt: skip
def test_a_malformed_entry_is_a_400_naming_it_and_nothing_is_kept(
    client: Client, s3: S3Client, document: Any, message: str
) -> None:
    answer = send(client, document)
    assert (answer.status_code, answer.json_body) == (400, {"error": message})
    assert stored(s3, "feedback/") == {}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"", 400, "body: empty; send a JSON object"),
        (b'{"feedback": [{"id": "a", "label": NaN}]}', 400,
         "feedback[0].label: nan is not a finite number"),
        (b"[" * 100_000, 400, "body: malformed JSON: nested too deeply"),
    ],
)  # fmt: skip
def test_hostile_bodies_are_refused(
    client: Client, s3: S3Client, body: bytes, status: int, message: str
) -> None:
    answer = client.http.post(
        "/models/iris/feedback", body=body, headers={"Content-Type": "application/json"}
    )
    assert (answer.status_code, answer.json_body) == (status, {"error": message})
    assert stored(s3, "feedback/") == {}


def test_a_bad_model_name_and_a_body_over_the_limit_are_refused(
    client: Client,
) -> None:
    bad = send(client, {"feedback": [{"id": "a", "label": 1}]}, model="Iris!")
    assert bad.status_code == 400
    assert bad.json_body["error"].startswith("invalid model name 'Iris!'")
    limit = wiring.settings().max_request_bytes
    big = client.http.post(
        "/models/iris/feedback",
        body=b" " * (limit + 1),
        headers={"Content-Type": "application/json"},
    )
    assert big.status_code == 413


def test_without_a_capture_bucket_feedback_is_unavailable(
    request: pytest.FixtureRequest, s3: S3Client
) -> None:
    for client in serving_client(request, capture_bucket=""):
        answer = send(client, {"feedback": [{"id": "a", "label": 1}]})
        assert (answer.status_code, answer.json_body) == (
            503,
            {"error": "feedback is off: the stage sets no TURNOUT_CAPTURE_BUCKET"},
        )


def test_captured_requests_carry_the_callers_own_id(
    client: Client, aliases: AliasStore, s3: S3Client
) -> None:
    aliases.set_capture("iris", "prod", Capture(100), actor="tests")
    v2 = post_json(client, "/v2/models/iris/infer", v2_request(IRIS_ROWS, id="v2-id"))
    instances = post_json(
        client,
        "/models/iris/predict",
        {"instances": IRIS_ROWS},
        headers={"X-Inference-Id": "caller-9"},
    )
    plain = post_json(client, "/models/iris/predict", {"instances": IRIS_ROWS})
    (records,) = stored(s3, "capture/").values()
    assert [(r["request_id"], r["caller_id"]) for r in records] == [
        (v2.headers["X-Request-Id"], "v2-id"),
        (instances.headers["X-Request-Id"], "caller-9"),
        (plain.headers["X-Request-Id"], None),
    ]


# -- labels files ----------------------------------------------------------------


def deliver(client: Client, s3: S3Client, key: str, body: str) -> dict[str, Any]:
    s3.put_object(Bucket=BATCH_BUCKET, Key=key, Body=body.encode())
    event = client.events.generate_s3_event(
        bucket=BATCH_BUCKET, key=quote_plus(key, safe="/")
    )
    payload: dict[str, Any] = client.lambda_.invoke(
        "handle_feedback_upload", event
    ).payload
    return payload


def errors_report(s3: S3Client, key: str) -> list[dict[str, Any]]:
    body = s3.get_object(Bucket=BATCH_BUCKET, Key=key)["Body"].read()
    return [json.loads(line) for line in body.decode().splitlines()]


def test_a_csv_labels_file_is_filed_and_its_bad_rows_reported(
    client: Client, s3: S3Client
) -> None:
    key = "feedback/iris/day one.csv"
    text = 'id,label\na1,2\nincoming/iris/x.csv#2,"[0, 1]"\n,1\nb2,setosa\nc3\nd4,\n'
    result = deliver(client, s3, key, text)
    errors = "outgoing/feedback/iris/day one.csv.errors.jsonl"
    assert result == {
        "action": "labels filed",
        "key": key,
        "labels": 3,
        "rejected": 3,
        "errors": errors,
    }
    (records,) = stored(s3, "feedback/iris/").values()
    assert [(r["id"], r["label"], r["source"]) for r in records] == [
        ("a1", 2, "batch"),
        ("incoming/iris/x.csv#2", [0, 1], "batch"),
        ("b2", "setosa", "batch"),
    ]
    assert errors_report(s3, errors) == [
        {"row": 3, "line": 4, "raw": ",1", "reason": "id: empty"},
        {"row": 5, "line": 6, "raw": "c3", "reason": "1 fields, the header has 2"},
        {"row": 6, "line": 7, "raw": "d4,", "reason": "label: missing"},
    ]


def test_a_json_lines_labels_file_is_filed_and_its_bad_rows_reported(
    client: Client, s3: S3Client
) -> None:
    key = "feedback/iris/labels.jsonl"
    text = (
        '{"id": "a", "label": 1}\nnot json\n{"id": "b", "label": [1, 2]}\n{"id": "c"}\n'
    )
    result = deliver(client, s3, key, text)
    assert (result["labels"], result["rejected"]) == (2, 2)
    (records,) = stored(s3, "feedback/iris/").values()
    assert [(r["id"], r["label"]) for r in records] == [("a", 1), ("b", [1, 2])]
    assert [(e["row"], e["line"], e["reason"]) for e in errors_report(
        s3, result["errors"])] == [
        (2, 2, "malformed JSON: Expecting value at line 1 column 1"),
        (4, 4, "label: missing"),
    ]  # fmt: skip


def test_a_labels_file_without_a_model_folder_or_format_is_reported(
    client: Client, s3: S3Client
) -> None:
    result = deliver(client, s3, "feedback/iris/labels.txt", "id,label\na,1\n")
    assert (result["labels"], result["rejected"]) == (0, 1)
    assert errors_report(s3, result["errors"])[0]["reason"] == (
        "key: a labels file ends in .csv or .jsonl"
    )
    assert stored(s3, "feedback/") == {}
