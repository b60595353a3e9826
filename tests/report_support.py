"""Crafted captures and labels for report tests and the benchmark: capture and
feedback objects written straight to S3 in the formats capture and the feedback
route write."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from chalicelib.capture import capture_key
from chalicelib.capture_summary import summarise, summary_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

START = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def capture_line(
    request_id: str,
    version: int,
    at: datetime,
    inputs: list[list[float]],
    labels: list[int],
    *,
    latency_ms: float = 5.0,
    caller_id: str | None = None,
) -> dict[str, Any]:
    """One captured request as capture writes it (and ``caller_id`` when given)."""
    record: dict[str, Any] = {
        "request_id": request_id,
        "time": at.isoformat(timespec="milliseconds"),
        "model": "iris",
        "version": version,
        "alias": "prod",
        "latency_ms": latency_ms,
        "routing_key_hash": None,
        "inputs": {"float_input": inputs},
        "outputs": {"label": labels},
    }
    if caller_id is not None:
        record["caller_id"] = caller_id
    return record


def put_capture(
    s3: S3Client,
    bucket: str,
    records: list[Mapping[str, Any]],
    name: str,
    *,
    with_summary: bool = True,
) -> str:
    """One capture object (and its summary, as capture writes it)."""
    first = datetime.fromisoformat(str(records[0]["time"])).timestamp()
    key = capture_key("iris", "prod", first, name)
    lines = "".join(json.dumps(record) + "\n" for record in records).encode()
    s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(lines, compresslevel=1))
    if with_summary:
        s3.put_object(
            Bucket=bucket,
            Key=summary_key(key),
            Body=json.dumps(summarise(records)).encode(),
        )
    return key


def feedback_key(model: str, at: datetime, name: str) -> str:
    """Where the feedback route files labels received at ``at``."""
    return f"feedback/{model}/{at:%Y/%m/%d/%H}/{at:%Y%m%dT%H%M%S}-{name}.jsonl.gz"


def put_labels(
    s3: S3Client,
    bucket: str,
    labels: Iterable[tuple[str, Any]],
    at: datetime,
    name: str,
) -> None:
    """One feedback object of (id, label) pairs received at ``at``."""
    lines = "".join(
        json.dumps(
            {
                "id": identity,
                "label": label,
                "received_at": at.isoformat(),
                "source": "rest",
            }
        )
        + "\n"
        for identity, label in labels
    ).encode()
    s3.put_object(
        Bucket=bucket,
        Key=feedback_key("iris", at, name),
        Body=gzip.compress(lines, compresslevel=1),
    )


def minutes(count: float) -> timedelta:
    return timedelta(minutes=count)
