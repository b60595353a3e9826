"""Crafted captures and labels for report tests and the benchmark: capture and
feedback objects written straight to S3 in the formats capture and the feedback
route write."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from chalicelib.capture import capture_key
from chalicelib.capture_summary import summarise, summary_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

START = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
# The report page's charts, in order (turnout.report.render_html).
CHARTS = ["latency", "over-time", "prediction-mix", "drift", "shadows"]


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
    records: Sequence[Mapping[str, Any]],
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


def synthetic_report(features: int = 30, versions: int = 3) -> dict[str, Any]:
    """A report with every chart drawn: ``versions`` versions of a classifier
    with ``features`` numeric features, each with a baseline, labels over six
    hours, and a shadow; built without S3."""
    import numpy as np

    from chalicelib.evidence.baseline import compute_baseline
    from turnout.report.collect import Collected, Labelled, ShadowPairs
    from turnout.report.figures import build_report

    random = np.random.default_rng(3)
    names = [f"float_input_{index}" for index in range(features)]
    baselines = {}
    records = []
    for version in range(1, versions + 1):
        training = random.normal(0, 1, (500, features))
        baselines[str(version)] = compute_baseline(
            training, names, ["numeric"] * features, labels=random.integers(0, 3, 500)
        )
        shift = 0.4 * (version - 1)
        for index in range(300):
            at = START + minutes(index)
            row = (random.normal(shift, 1, features)).round(3).tolist()
            records.append(
                capture_line(
                    f"{version}-{index}",
                    version,
                    at,
                    [row],
                    [int(random.integers(0, 3))],
                    latency_ms=float(random.lognormal(2 + version / 3, 0.4)),
                )
            )
    summary = summarise(records, baselines)
    labelled = {}
    for version in range(1, versions + 1):
        entry = Labelled()
        accuracy = 0.6 + 0.1 * version
        for hour in range(6):
            right = int(40 * accuracy)
            entry.pairs[("0", "0")] += right
            entry.pairs[("1", "0")] += 40 - right
            entry.hours[f"2026-01-05T{10 + hour:02d}"] = [right, 40, 0.0]
            entry.requests += 40
            entry.rows += 40
        labelled[str(version)] = entry
    shadow = ShadowPairs()
    shadow.triples[("0", "0", "0")] = 80
    shadow.triples[("0", "1", "0")] = 15
    shadow.triples[("1", "0", "0")] = 5
    collected = Collected(summary, labelled, {("1", "2"): shadow}, 720, 3, 10, 900)
    weights = {str(version): 100.0 / versions for version in range(1, versions + 1)}
    return build_report(
        collected,
        model="iris",
        alias="prod",
        since=START,
        until=START + timedelta(hours=6),
        weights=weights,
        baselines=baselines,
    )
