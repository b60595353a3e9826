"""Read what a report needs from S3, one object at a time, in bounded memory.

For a model's alias and a window [since, until):

1. Labels (``feedback/{model}/{yyyy}/{mm}/{dd}/{hh}/...jsonl.gz`` in the capture
   bucket) that arrived within the join window (7 days) of it are read into one
   dictionary keyed by id: the first label received for an id wins. Memory grows
   with the labels, about 200 bytes each (500k labels: about 100 MB).
2. Capture objects (``capture/{model}/{alias}/...``) are listed in key order,
   which is time order. Each one's mergeable summary (``.summary.json``, see
   ``chalicelib.capture_summary``) gives requests, errors, latency, feature
   histograms and the prediction mix; the records themselves are read only when
   there are labels to join (or an object has no summary, and then they are
   summarised on the versions' baseline bins, which makes drift exact), and
   only the lines that name a label are decoded.
   A record matches a label by its ``id`` (``request_id`` in older captures) or
   its ``caller_id`` when the two times are within the join window; the earliest
   capture takes the label, which leaves the dictionary, so it shrinks as the
   join proceeds.
   Matched pairs are folded into counts at once (a confusion count per version,
   or absolute errors for a regressor): no record outlives its object.
"""

from __future__ import annotations

import functools
import gzip
import itertools
import json
import math
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from chalicelib.capture import CAPTURE_PREFIX
from chalicelib.capture_summary import (
    SUMMARY_SUFFIX,
    merge_into,
    record_predictions,
    summarise,
    summary_key,
)
from chalicelib.evidence.baseline import Baseline

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

FEEDBACK_PREFIX = "feedback/"
JOIN_WINDOW = timedelta(days=7)
# Capture objects are filed under the hour of their first request and written
# within a flush interval of it: start listing an hour early.
CAPTURE_LEAD = timedelta(hours=1)
SUMMARY_READERS = 16
JOIN_SECONDS = JOIN_WINDOW.total_seconds()
# A label names a capture by Turnout's id (``request_id`` in older captures)
# or by the caller's own.
IDENTITIES = ("id", "request_id", "caller_id")
IDENTITY_MARKS = tuple(f'"{name}": "'.encode() for name in IDENTITIES)
SHADOW_MARK = b'"shadow":'


@dataclass
class Labelled:
    """One version's labelled predictions, folded into counts."""

    requests: int = 0
    rows: int = 0
    pairs: Counter[tuple[str, str]] = field(default_factory=Counter)
    errors: array[float] = field(default_factory=lambda: array("d"))
    numeric: bool = True
    # hour -> [correct rows, labelled rows, sum of absolute errors]
    hours: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class ShadowPairs:
    """A primary version and its shadow on the same rows: (primary, shadow,
    label or None) counts."""

    triples: Counter[tuple[str, str, str | None]] = field(default_factory=Counter)


@dataclass
class Collected:
    """Everything the figures are computed from."""

    summary: dict[str, Any]
    labelled: dict[str, Labelled]
    shadows: dict[tuple[str, str], ShadowPairs]
    labels_read: int
    labels_unmatched: int
    objects: int
    records_read: int


def read_labels(
    s3: S3Client, bucket: str, model: str, since: datetime, until: datetime
) -> dict[str, tuple[Any, float]]:
    """The labels received in [since - join window, until + join window): id ->
    (label, received at, epoch seconds); the first received wins."""
    labels: dict[str, tuple[Any, float]] = {}
    prefix = f"{FEEDBACK_PREFIX}{model}/"
    for key in keys_between(
        s3, bucket, prefix, since - JOIN_WINDOW, until + JOIN_WINDOW
    ):
        for line in _lines(s3, bucket, key):
            entry = json.loads(line)
            received = _epoch(entry.get("received_at"))
            known = labels.get(entry["id"])
            if known is None or received < known[1]:
                labels[entry["id"]] = (entry.get("label"), received)
    return labels


def collect(
    s3: S3Client,
    bucket: str,
    model: str,
    alias: str,
    since: datetime,
    until: datetime,
    baselines: Mapping[str, Baseline] | None = None,
) -> Collected:
    """Stream the window's captures and labels into the report's inputs."""
    labels = read_labels(s3, bucket, model, since, until)
    labels_read = len(labels)
    summary: dict[str, Any] = {"versions": {}}
    labelled: dict[str, Labelled] = {}
    shadows: dict[tuple[str, str], ShadowPairs] = {}
    objects = records_read = 0
    low, high = since.timestamp(), until.timestamp()
    prefix = f"{CAPTURE_PREFIX}{model}/{alias}/"
    keys = (
        key
        for key in keys_between(s3, bucket, prefix, since - CAPTURE_LEAD, until)
        if not key.endswith(SUMMARY_SUFFIX)
    )
    # Summaries fetched SUMMARY_READERS at a time, as S3 serves small objects
    # best in parallel; without labels to join they are all there is to read.
    for key, stored in _summaries(s3, bucket, keys):
        objects += 1
        summarised = stored is not None and _inside(stored, since, until)
        if stored is not None and summarised:
            merge_into(summary, stored)
            if not labels:
                continue
        records, times = [], []
        for line in _lines(s3, bucket, key):
            # A summarised object's records are read for the join alone: a
            # record no label names is skipped before it is decoded.
            if summarised and not _may_join(line, labels):
                continue
            record = json.loads(line)
            at = _epoch(record.get("time"))
            if low <= at < high:
                records.append(record)
                times.append(at)
        records_read += len(records)
        if not summarised:
            merge_into(summary, summarise(records, baselines))
        for record, at in zip(records, times, strict=True):
            _join(record, at, labels, labelled, shadows)
    return Collected(
        summary,
        labelled,
        shadows,
        labels_read,
        _unmatched(labels, low, high),
        objects,
        records_read,
    )


def keys_between(
    s3: S3Client, bucket: str, prefix: str, since: datetime, until: datetime
) -> Iterator[str]:
    """Keys under ``prefix`` filed ({yyyy}/{mm}/{dd}/{hh}/) from the hour of
    ``since`` to the hour of ``until``, in key order."""
    first = f"{prefix}{since.astimezone(UTC):%Y/%m/%d/%H}/"
    last = f"{prefix}{until.astimezone(UTC):%Y/%m/%d/%H}/\uffff"
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, StartAfter=first
    )
    for page in pages:
        for item in page.get("Contents", []):
            if item["Key"] > last:
                return
            yield item["Key"]


def _join(
    record: Mapping[str, Any],
    at: float,
    labels: dict[str, tuple[Any, float]],
    labelled: dict[str, Labelled],
    shadows: dict[tuple[str, str], ShadowPairs],
) -> None:
    truth: list[Any] | None = None
    for name in IDENTITIES:
        identity = record.get(name)
        found = labels.get(identity) if isinstance(identity, str) else None
        if found is not None and abs(found[1] - at) <= JOIN_SECONDS:
            del labels[identity]  # type: ignore[arg-type]
            truth = found[0] if isinstance(found[0], list) else [found[0]]
            break
    shadow = record.get("shadow")
    if truth is None and shadow is None:
        return
    version = str(record.get("version"))
    predictions = record_predictions(record)
    if isinstance(shadow, Mapping):
        shadowed = record_predictions(shadow)
        pairs = shadows.setdefault((version, str(shadow.get("version"))), ShadowPairs())
        for index, (ours, theirs) in enumerate(
            zip(predictions, shadowed, strict=False)
        ):
            label = truth[index] if truth is not None and index < len(truth) else None
            pairs.triples[
                (str(ours), str(theirs), None if label is None else str(label))
            ] += 1
    if truth is None or len(truth) != len(predictions):
        return
    entry = labelled.setdefault(version, Labelled())
    entry.requests += 1
    entry.rows += len(truth)
    hour = entry.hours.setdefault(str(record.get("time", ""))[:13], [0.0, 0.0, 0.0])
    for label, prediction in zip(truth, predictions, strict=True):
        entry.pairs[(str(label), str(prediction))] += 1
        if _number(label) and _number(prediction):
            error = abs(float(prediction) - float(label))
            entry.errors.append(error)
            hour[2] += error
        else:
            entry.numeric = False
        hour[0] += float(str(label) == str(prediction))
        hour[1] += 1


def _may_join(line: bytes, labels: Mapping[str, object]) -> bool:
    """Whether a capture line (as capture writes it) may name a label or carry a
    shadow's answer, found without decoding it; True when unsure."""
    if SHADOW_MARK in line:
        return True
    for mark in IDENTITY_MARKS:
        start = line.find(mark)
        if start < 0:
            continue
        start += len(mark)
        end = line.find(b'"', start)
        identity = line[start:end]
        if end < 0 or b"\\" in identity or identity.decode() in labels:
            return True
    return False


def _number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _unmatched(labels: Mapping[str, tuple[Any, float]], low: float, high: float) -> int:
    return sum(1 for _, received in labels.values() if low <= received < high)


def _inside(summary: Mapping[str, Any], since: datetime, until: datetime) -> bool:
    """Whether every hour a summary counts lies inside [since, until)."""
    for entry in summary.get("versions", {}).values():
        for hour in entry.get("hours", {}):
            moment = datetime.fromisoformat(hour + ":00:00+00:00")
            if moment < since or moment + timedelta(hours=1) > until:
                return False
    return True


def _summaries(
    s3: S3Client, bucket: str, keys: Iterable[str]
) -> Iterator[tuple[str, dict[str, Any] | None]]:
    """Each capture object's key and summary (None: it has none), in order, with
    at most a few chunks of summaries in memory."""
    with ThreadPoolExecutor(SUMMARY_READERS) as pool:
        for chunk in itertools.batched(keys, 4 * SUMMARY_READERS):
            read = pool.map(functools.partial(_summary, s3, bucket), chunk)
            yield from zip(chunk, read, strict=True)


def _summary(s3: S3Client, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        body = s3.get_object(Bucket=bucket, Key=summary_key(key))["Body"].read()
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    document: dict[str, Any] = json.loads(body)
    return document


def _lines(s3: S3Client, bucket: str, key: str) -> Iterator[bytes]:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    with gzip.GzipFile(fileobj=body) as stream:
        yield from stream


def _epoch(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str) or not value:
        return math.nan
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
