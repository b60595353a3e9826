"""S3 event delivery for ``chalice local``: bucket -> SQS on the moto server ->
``EventPump`` -> the function, and through the whole dev stack to the batch
handler."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest
from chalice.app import S3Event
from click.testing import CliRunner, Result

from chalicelib.batch import keys
from tests.e2e.e2e_support import eventually
from tools.devstack.emulator import EventPump
from tools.devstack.notifications import connect_bucket_events
from tools.devstack.seed import create_buckets
from tools.devstack.stack import DevStack
from turnout.cli.main import cli

POLL_TIMEOUT = 30.0


def private_pump(
    dev_stack: DevStack, invoke: Any
) -> tuple[str, EventPump]:  # a bucket and queue the stack's own pump never reads
    suffix = uuid.uuid4().hex[:12]
    bucket = f"turnout-pump-{suffix}"
    create_buckets(dev_stack.s3, bucket)
    queue_url = connect_bucket_events(
        dev_stack.s3, dev_stack.sqs, bucket, f"pump-{suffix}"
    )
    return bucket, EventPump(dev_stack.sqs, queue_url, invoke, wait_seconds=1)


def pump_until(pump: EventPump, events: int) -> int:
    """Poll until ``events`` were delivered; how many were."""
    delivered = 0

    def enough() -> bool:
        nonlocal delivered
        delivered += pump.poll()  # a long poll: it waits for messages itself
        return delivered >= events

    eventually(
        enough,
        timeout=POLL_TIMEOUT,
        interval=0,
        message=lambda: f"{delivered} of {events} events delivered",
    )
    return delivered


def test_an_upload_under_incoming_reaches_the_function_as_an_s3_event(
    dev_stack: DevStack,
) -> None:
    received: list[dict[str, Any]] = []
    bucket, pump = private_pump(dev_stack, received.append)
    dev_stack.s3.put_object(Bucket=bucket, Key="elsewhere/ignored.csv", Body=b"x")
    dev_stack.s3.put_object(
        Bucket=bucket, Key="incoming/iris/a file (1).csv", Body=b"1,2,3,4\n"
    )

    assert pump_until(pump, 1) == 1
    assert pump.poll() == 0  # nothing for keys outside incoming/
    (event,) = received
    (record,) = event["Records"]
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["s3"]["bucket"]["name"] == bucket
    # Encoded as S3 encodes keys in events: a space is '+', slashes stay.
    assert record["s3"]["object"]["key"] == "incoming/iris/a+file+%281%29.csv"
    assert record["s3"]["object"]["size"] == 8
    assert S3Event(event, context=None).key == "incoming/iris/a file (1).csv"


def test_a_failing_function_is_logged_and_the_pump_carries_on(
    dev_stack: DevStack, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def fail_first(event: dict[str, Any]) -> None:
        calls.append(event["Records"][0]["s3"]["object"]["key"])
        if len(calls) == 1:
            raise RuntimeError("the handler broke")

    bucket, pump = private_pump(dev_stack, fail_first)
    caplog.set_level(logging.INFO, logger="devstack")
    dev_stack.s3.put_object(Bucket=bucket, Key="incoming/iris/first.csv", Body=b"x")
    assert pump_until(pump, 1) == 1
    dev_stack.s3.put_object(Bucket=bucket, Key="incoming/iris/second.csv", Body=b"x")
    assert pump_until(pump, 1) == 1

    assert calls == ["incoming/iris/first.csv", "incoming/iris/second.csv"]
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in failures] == [
        f"s3://{bucket}/incoming/iris/first.csv: the handler failed"
    ]
    assert failures[0].exc_info is not None
    assert "the handler broke" in str(failures[0].exc_info[1])


def test_an_upload_to_the_batch_bucket_runs_the_batch_handler(
    dev_stack: DevStack, wait_for_batch: Any, wait_for_object: Any
) -> None:
    key = f"incoming/iris/pump check {uuid.uuid4().hex[:8]}.csv"
    body = b"sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n"
    dev_stack.s3.put_object(Bucket=dev_stack.batch_bucket, Key=key, Body=body)

    manifest = wait_for_batch(key)

    assert manifest["status"] == "succeeded", manifest
    assert manifest["model"] == "iris"
    assert manifest["input"]["key"] == key
    assert manifest["rows"]["read"] == 1
    assert manifest["rows"]["predicted"] == 1
    output = "outgoing/" + key[len("incoming/") :] + ".out"
    assert b"setosa" in wait_for_object(dev_stack.batch_bucket, output)


def test_turnout_batch_retry_reruns_a_dead_job_through_a_new_event(
    dev_stack: DevStack, wait_for_batch: Any
) -> None:
    key = f"incoming/iris/dead {uuid.uuid4().hex[:8]}.csv"
    body = b"sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n"
    bucket = dev_stack.batch_bucket
    etag = dev_stack.s3.put_object(Bucket=bucket, Key=key, Body=body)["ETag"]
    first = wait_for_batch(key)
    # What a job killed outright leaves: a running manifest whose claim expired.
    dead = {**first, "status": "running", "claim": {"expires_at": "2000-01-01"}}
    manifest_key = keys.record_key(key)
    dev_stack.s3.put_object(Bucket=bucket, Key=manifest_key, Body=json.dumps(dead))

    def turnout(command: str) -> Result:
        arguments = ["--endpoint-url", dev_stack.endpoint_url, "batch", command, key]
        return CliRunner().invoke(cli, [*arguments, "--batch-bucket", bucket])

    status = turnout("status")
    assert status.exit_code == 5 and f"{key}: dead" in status.stdout
    retry = turnout("retry")
    assert retry.exit_code == 0, retry.output

    again = wait_for_batch(key)
    assert again["status"] == "succeeded" and again["run_id"] != first["run_id"]
    assert again["input"]["etag"] == etag
