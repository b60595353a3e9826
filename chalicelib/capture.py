"""Data capture: a sample of each alias's answered requests, written to S3 as
gzip-compressed JSON Lines, in batches, after the answer.

An observer. For an answered REST request whose alias has a capture setting
(``turnout capture set``), it draws against the sampling percentage and, when
drawn, keeps a reference to the request's arrays in a per-container buffer
(``chalicelib.record_buffer``): that is all the caller pays for. Converting,
compressing and writing happen after the answer, under the buffer's durability
rule: every captured request reaches S3 within ``flush_seconds`` of its answer,
or is counted late (``CaptureRecordsLate``) or lost (``CaptureRecordsLost``).

Objects: ``capture/{model}/{alias}/{yyyy}/{mm}/{dd}/{hh}/{time}-{id}.jsonl.gz``,
the hour (UTC) of the batch's first request; one line per request with its id
(``request_id``, the X-Request-Id Turnout answered with), the caller's own id
(``caller_id``: V2's ``id``, the ``X-Inference-Id`` header of ``instances``;
null when none), time, model, version, alias, latency, routing-key hash and the
parts kept (inputs, outputs). Labels join captured requests by either id
(docs/evidence.md).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from chalicelib.aliases.cache import AliasCache
from chalicelib.background import BackgroundWork
from chalicelib.capture_summary import summarise, summary_key
from chalicelib.observe import OK, REST, Observation
from chalicelib.record_buffer import Group, RecordBuffer, read_records
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
        "caller_id": observation.caller_id,
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


def _group(item: Captured) -> Group:
    observation = item.observation
    assert observation.alias is not None
    return (observation.model, observation.alias)


def _key(group: Group, at: float, name: str) -> str:
    model, alias = group
    return capture_key(model, alias, at, name)


class DataCapture:
    """The capture observer; see the module docstring.

    ``aliases`` gives each alias's capture setting (the serving cache, already
    warm for the request), ``draw`` the sampling draws in [0, 1),
    ``wall_clock`` the records' times, ``clock`` (monotonic seconds) the
    buffer's age. ``on_failure(model, alias, records, error)`` counts a write
    S3 refused, ``on_late(model, alias, records)`` the requests written after
    ``flush_seconds``.
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
        on_late: Callable[[str, str, int], None] = lambda *_: None,
        flush_records: int = 100,
        flush_seconds: float = 60.0,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._aliases = aliases
        self._s3 = s3
        self._bucket = bucket
        self._draw = draw
        self._wall_clock = wall_clock
        self._buffer = RecordBuffer[Captured](
            s3,
            bucket,
            work,
            group=_group,
            render=capture_record,
            key=_key,
            kind="capture",
            on_failure=lambda group, records, error: on_failure(
                group[0], group[1], records, error
            ),
            on_late=lambda group, records: on_late(group[0], group[1], records),
            on_written=self._write_summary,
            flush_records=flush_records,
            flush_seconds=flush_seconds,
            wall_clock=wall_clock,
            clock=clock,
        )

    def _write_summary(self, key: str, lines: str) -> None:
        """Write the mergeable summary a report reads instead of the records
        (``chalicelib.capture_summary``) next to the object at ``key``: second,
        so it never counts records that are not there; without it a report
        reads the records. A refused summary is logged, never raised."""
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

    def observe(self, observation: Observation) -> None:
        """Keep an answered request if its alias captures and the draw says so."""
        if (
            observation.source != REST
            or observation.outcome != OK
            or observation.alias is None
        ):
            return
        capture = self._aliases.get(observation.model, observation.alias).capture
        if capture is None or not sampled(capture.percent, self._draw):
            return
        at = self._wall_clock()
        self._buffer.add(Captured(observation, capture.keep, at), at)

    @property
    def buffered(self) -> int:
        """How many captured requests wait for the next write."""
        return self._buffer.buffered

    def flush(self) -> None:
        """Write every buffered request now: one object per model and alias."""
        self._buffer.flush()


def read_capture(body: bytes) -> list[Mapping[str, Any]]:
    """The records of one capture object (its stored, compressed bytes)."""
    return read_records(body)
