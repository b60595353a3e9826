"""Data capture: a sample of each alias's answered requests, written to S3 as
gzip-compressed JSON Lines, in batches, after the answer.

An observer. For an answered REST request whose alias has a capture setting
(``turnout capture set``), it draws against the sampling percentage and, when
drawn, keeps a reference to the request's arrays in a per-container buffer:
that is all the caller pays for. Converting, compressing and writing happen in
``flush``, which the after-response work (``chalicelib.background``) runs once
the buffer holds ``flush_records`` requests or its oldest is ``flush_seconds``
old (checked as requests arrive).

Objects: ``capture/{model}/{alias}/{yyyy}/{mm}/{dd}/{hh}/{time}-{id}.jsonl.gz``,
the hour (UTC) of the batch's first request; one line per request with its id,
time, model, version, alias, latency, routing-key hash and the parts kept
(inputs, outputs).

What can be lost: a container that is reclaimed keeps its buffer, so at most
``flush_records - 1`` captured requests per container, all of them newer than
its last flush. A write that S3 refuses is logged and counted (the
``CaptureErrors`` metric) and its records are dropped; capture never fails or
slows a prediction.
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from chalicelib.aliases.cache import AliasCache
from chalicelib.background import BackgroundWork
from chalicelib.capture_summary import summarise, summary_key
from chalicelib.observe import OK, REST, Observation
from chalicelib.traffic import sampled

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger("turnout.capture")

CAPTURE_PREFIX = "capture/"


@dataclass(slots=True)
class Captured:
    """A request drawn for capture: its observation, what to keep, and when
    (seconds since the epoch)."""

    observation: Observation
    keep: tuple[str, ...]
    at: float


def capture_key(model: str, alias: str, at: float, name: str) -> str:
    """Where a batch whose first request came at ``at`` is written."""
    moment = datetime.fromtimestamp(at, UTC)
    return (
        f"{CAPTURE_PREFIX}{model}/{alias}/{moment:%Y/%m/%d/%H}/"
        f"{moment:%Y%m%dT%H%M%S}-{name}.jsonl.gz"
    )


def capture_record(item: Captured) -> dict[str, Any]:
    """The JSON object one captured request becomes."""
    observation = item.observation
    record: dict[str, Any] = {
        "request_id": observation.request_id,
        "time": datetime.fromtimestamp(item.at, UTC).isoformat(timespec="milliseconds"),
        "model": observation.model,
        "version": observation.version,
        "alias": observation.alias,
        "latency_ms": round(observation.latency_ms, 3),
        "routing_key_hash": observation.routing_key_hash,
    }
    for part in item.keep:
        arrays = getattr(observation, part) or {}
        record[part] = {name: _listed(array) for name, array in arrays.items()}
    return record


def _listed(array: np.ndarray) -> Any:
    if array.dtype.kind == "S":
        return np.char.decode(array, errors="replace").tolist()
    return array.tolist()


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class DataCapture:
    """The capture observer; see the module docstring.

    ``aliases`` gives each alias's capture setting (the serving cache, already
    warm for the request), ``draw`` the sampling draws in [0, 1),
    ``wall_clock`` the records' times, ``clock`` (monotonic seconds) the
    buffer's age. ``on_failure(model, alias, records, error)`` counts a write
    S3 refused.
    """

    def __init__(
        self,
        aliases: AliasCache,
        s3: S3Client,
        bucket: str,
        work: BackgroundWork,
        *,
        draw: Callable[[], float],
        on_failure: Callable[[str, str, int, str], None],
        flush_records: int = 100,
        flush_seconds: float = 60.0,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._aliases = aliases
        self._s3 = s3
        self._bucket = bucket
        self._work = work
        self._draw = draw
        self._on_failure = on_failure
        self._flush_records = flush_records
        self._flush_seconds = flush_seconds
        self._wall_clock = wall_clock
        self._clock = clock
        self._lock = threading.Lock()
        self._buffer: list[Captured] = []
        self._oldest = 0.0
        self._flush_submitted = False

    def observe(self, observation: Observation) -> None:
        """Keep an answered request if its alias captures and the draw says so;
        submit a flush when the buffer is full or old enough."""
        if (
            observation.source != REST
            or observation.outcome != OK
            or observation.alias is None
        ):
            return
        capture = self._aliases.get(observation.model, observation.alias).capture
        if capture is None or not sampled(capture.percent, self._draw):
            return
        now = self._clock()
        item = Captured(observation, capture.keep, self._wall_clock())
        with self._lock:
            if not self._buffer:
                self._oldest = now
            self._buffer.append(item)
            due = (
                len(self._buffer) >= self._flush_records
                or now - self._oldest >= self._flush_seconds
            )
            if not due or self._flush_submitted:
                return
            self._flush_submitted = True
        self._work.submit(self.flush)

    @property
    def buffered(self) -> int:
        """How many captured requests wait for the next flush."""
        with self._lock:
            return len(self._buffer)

    def flush(self) -> None:
        """Write every buffered request: one object per model and alias. A
        refused write is logged and counted, never raised."""
        with self._lock:
            items, self._buffer = self._buffer, []
            self._flush_submitted = False
        groups: dict[tuple[str, str], list[Captured]] = {}
        for item in items:
            observation = item.observation
            assert observation.alias is not None
            groups.setdefault((observation.model, observation.alias), []).append(item)
        for (model, alias), group in groups.items():
            self._write(model, alias, group)

    def _write(self, model: str, alias: str, group: list[Captured]) -> None:
        lines = "".join(
            json.dumps(capture_record(item), default=_text) + "\n" for item in group
        )
        key = capture_key(model, alias, group[0].at, uuid.uuid4().hex[:12])
        try:
            self._s3.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=gzip.compress(lines.encode(), compresslevel=6),
                ContentType="application/gzip",
            )
        except Exception as error:
            reason = str(error) or type(error).__name__
            logger.warning(
                json.dumps(
                    {
                        "event": "capture_failed",
                        "model": model,
                        "alias": alias,
                        "records": len(group),
                        "error": reason,
                    }
                )
            )
            self._on_failure(model, alias, len(group), reason)
            return
        # The mergeable summary a report reads instead of the records
        # (chalicelib.capture_summary); written second, so it never counts
        # records that are not there. Without it a report reads the records.
        try:
            summary = summarise(json.loads(line) for line in lines.splitlines())
            self._s3.put_object(
                Bucket=self._bucket,
                Key=summary_key(key),
                Body=json.dumps(summary).encode(),
                ContentType="application/json",
            )
        except Exception as error:
            logger.warning(
                json.dumps({"event": "summary_failed", "key": key, "error": str(error)})
            )


def read_capture(body: bytes) -> list[Mapping[str, Any]]:
    """The records of one capture object (its stored, compressed bytes)."""
    return [json.loads(line) for line in gzip.decompress(body).splitlines()]
