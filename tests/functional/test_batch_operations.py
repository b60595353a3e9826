"""The batch operations as a library (no CLI) against moto: submit, status,
list, follow."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from chalicelib.batch import keys, operations
from chalicelib.clock import iso_timestamp
from chalicelib.errors import BatchJobNotFoundError, BatchKeyError
from tests.demo_support import BATCH_BUCKET

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

START = datetime(2026, 1, 1, 12, tzinfo=UTC)


@pytest.fixture
def bucket(s3: S3Client) -> S3Client:
    s3.create_bucket(Bucket=BATCH_BUCKET)
    return s3


def write_record(s3: S3Client, key: str, etag: str, **fields: Any) -> None:
    record = {
        "status": "running",
        "model": "iris",
        "alias": None,
        "version": 1,
        "rows": {"read": 0, "predicted": 0, "rejected": 0},
        "input": {"etag": etag},
        "run_id": "r1",
        "started_at": iso_timestamp(START),
        "claim": {
            "run_id": "r1",
            "expires_at": iso_timestamp(START + timedelta(seconds=60)),
        },
        **fields,
    }
    s3.put_object(
        Bucket=BATCH_BUCKET, Key=keys.record_key(key), Body=json.dumps(record)
    )


def test_submit_uploads_under_a_content_name_once(
    bucket: S3Client, tmp_path: Path
) -> None:
    local = tmp_path / "data.csv"
    local.write_text("sepal_length\n1\n")
    upload = operations.prepare(local, "iris@1")
    assert upload.key == (
        "incoming/iris@1/data-" + operations.content_sha256(local)[:12] + ".csv"
    )

    first = operations.submit(bucket, BATCH_BUCKET, upload, now=START)
    write_record(bucket, upload.key, first.etag, status="succeeded")
    again = operations.submit(bucket, BATCH_BUCKET, upload, now=START)

    assert (first.uploaded, first.job) == (True, None)
    assert (again.uploaded, again.etag) == (False, first.etag)
    assert again.job is not None and again.job.state == "succeeded"


def test_submit_refuses_a_bad_key_before_uploading(
    bucket: S3Client, tmp_path: Path
) -> None:
    local = tmp_path / "data.csv"
    local.write_text("x\n")
    with pytest.raises(BatchKeyError):
        operations.prepare(local, "Iris!")
    assert bucket.list_objects_v2(Bucket=BATCH_BUCKET)["KeyCount"] == 0


def test_status_list_and_a_missing_job(bucket: S3Client) -> None:
    key = "incoming/iris@1/a.csv"
    write_record(bucket, key, '"e1"')

    job = operations.status(bucket, BATCH_BUCKET, key, now=START)
    listed = operations.list_jobs(
        bucket, BATCH_BUCKET, since=timedelta(days=1), now=datetime.now(UTC)
    )

    assert (job.key, job.state) == (key, "running")
    assert [(j.key, j.state) for j in listed] == [(key, "dead")]
    with pytest.raises(BatchJobNotFoundError):
        operations.status(bucket, BATCH_BUCKET, "incoming/iris@1/b.csv", now=START)
    with pytest.raises(BatchKeyError):
        operations.status(bucket, BATCH_BUCKET, "iris@1/a.csv", now=START)


def test_follow_ends_when_the_claim_expires_on_the_injected_clock(
    bucket: S3Client,
) -> None:
    key = "incoming/iris@1/a.csv"
    write_record(bucket, key, '"e1"')
    now = [START]
    seen: list[str] = []

    def sleep(seconds: float) -> None:
        now[0] += timedelta(seconds=seconds)

    job = operations.follow(
        bucket,
        BATCH_BUCKET,
        key,
        '"e1"',
        clock=lambda: now[0],
        sleep=sleep,
        on_progress=lambda record: seen.append(record["status"]),
        interval=20.0,
    )

    assert job.state == "dead"
    # Read at 0, 20 and 40 s (running), then at 60 s: the claim has expired.
    assert now[0] == START + timedelta(seconds=60)
    assert seen == ["running"] * 3
