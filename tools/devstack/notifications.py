"""Bucket events, which ``chalice local`` lacks (Chalice issue 899): a bucket
notifies an SQS queue on the moto server of the objects created under a prefix,
and each notification becomes the Lambda events S3 would hand a function. Also
the shard queue of fanned-out files, with its dead-letter queue."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus, unquote_plus

from chalicelib.config import INCOMING_PREFIX

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient


def connect_bucket_events(
    s3: S3Client,
    sqs: SQSClient,
    bucket: str,
    queue_name: str,
    *,
    prefix: str = INCOMING_PREFIX,
    visibility_seconds: int = 900,
) -> str:
    """Send ``s3:ObjectCreated:*`` events for keys under ``prefix`` in ``bucket``
    to the SQS queue ``queue_name`` (created here); returns the queue's URL.

    ``visibility_seconds`` should cover the handler's run, so that a long job is
    not handed out twice.
    """
    queue_url = sqs.create_queue(
        QueueName=queue_name,
        Attributes={"VisibilityTimeout": str(visibility_seconds)},
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    # Other prefixes' queues stay (labels files under feedback/ have their own).
    kept = s3.get_bucket_notification_configuration(Bucket=bucket).get(
        "QueueConfigurations", []
    )
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                *kept,
                {
                    "QueueArn": queue_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {
                        "Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}
                    },
                },
            ]
        },
    )
    return queue_url


def create_shard_queue(
    sqs: SQSClient, name: str, *, attempts: int, visibility_seconds: int = 900
) -> str:
    """The queue of fanned-out files' shards (created here, with its dead-letter
    queue ``{name}-dead`` after ``attempts`` receives); returns its URL."""
    dead = sqs.create_queue(QueueName=f"{name}-dead")["QueueUrl"]
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    redrive = {"deadLetterTargetArn": dead_arn, "maxReceiveCount": str(attempts)}
    return sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(visibility_seconds),
            "RedrivePolicy": json.dumps(redrive),
        },
    )["QueueUrl"]


def encode_event_key(key: str) -> str:
    """An S3 key as S3 writes it into events: form-encoded (a space is ``+``),
    slashes kept. moto encodes the slashes too; this undoes the difference."""
    return quote_plus(unquote_plus(key), safe="/")


def s3_events(message_body: str) -> list[dict[str, Any]]:
    """The Lambda events in one S3 notification: one per record, as S3 invokes a
    function directly. None for S3's ``s3:TestEvent``; ValueError if the body is
    not a JSON object."""
    notification = json.loads(message_body)
    if not isinstance(notification, dict):
        raise ValueError("an S3 notification is a JSON object")
    events = []
    for record in notification.get("Records", []):
        s3 = record.get("s3", {})
        s3_object = dict(s3.get("object", {}))
        if "key" in s3_object:
            s3_object["key"] = encode_event_key(s3_object["key"])
        events.append({"Records": [{**record, "s3": {**s3, "object": s3_object}}]})
    return events


def describe_event(event: Mapping[str, Any]) -> str:
    """``s3://bucket/key`` of a one-record S3 event, for logs."""
    s3 = event["Records"][0]["s3"]
    return f"s3://{s3['bucket']['name']}/{unquote_plus(s3['object']['key'])}"
