"""Evidence written after the answer (captured requests, labels): records kept in
a per-container buffer and written to S3 as gzip-compressed JSON Lines, one
object per group (a model and alias for capture, a model for labels).

The durability rule: every record reaches S3 within ``flush_seconds`` of its
answer whether or not more traffic comes, or is counted (late or lost).

- Where nothing is frozen (``chalice local``, ``make dev``, the test client), a
  timer writes the buffer ``TARGET`` of ``flush_seconds`` after its oldest record
  came; a full buffer (``flush_records``) is written at once.
- On Lambda a frozen container runs nothing, and nobody knows whether another
  request will come: the buffer is written after the invocation that answered
  (by the internal extension) unless the next record is expected in time. The
  next record is expected within ``QUIET_FACTOR`` times the gap between the last
  two records, so the buffer is written when ``age of its oldest + QUIET_FACTOR
  * gap >= TARGET * flush_seconds``, or when it holds ``flush_records``. A quiet
  container (its first record, or one after a long gap) writes at once; a busy
  one batches. A buffer caught by a sudden stop of traffic is written by the
  next record (late) or at shutdown: the runtime flushes on SIGTERM, which
  Lambda sends because the layer's external extension ``turnout-shutdown``
  subscribes to SHUTDOWN (``chalicelib.extension``).
- ``flush_seconds`` 0 writes every record after its own invocation.

A record written more than ``flush_seconds`` after its answer is counted by
``on_late``; a write S3 refuses is logged and counted by ``on_failure`` and its
records dropped. Only a crash (no SIGTERM) loses records uncounted. Writing
never fails or slows a prediction.

PUT requests per container and group, worst case: at most ``QUIET_FACTOR /
(TARGET * flush_seconds)`` per second while records are sparse (each written
alone), about ``1 / (TARGET * flush_seconds)`` plus ``rate / flush_records``
while busy, one at shutdown.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chalicelib.background import BackgroundWork

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger("turnout.evidence")

# The buffer aims at this share of flush_seconds, leaving the rest for the write.
TARGET = 0.9
# The next record is expected within this many times the last gap between two.
QUIET_FACTOR = 2.0

Group = tuple[str, ...]


@dataclass(slots=True)
class _Pending[Item]:
    item: Item
    at: float  # the answer's wall-clock time, seconds since the epoch


class RecordBuffer[Item]:
    """The buffer and writer of one kind of record (see the module docstring).

    ``group(item)`` names the object an item goes to, ``render(item)`` its JSON
    object (built when written, off the caller's time), ``key(group, at, name)``
    the object's key for a batch whose first record came at ``at``. ``work`` runs
    the writes after the answer (deferred to the extension on Lambda).
    ``on_failure(group, records, error)`` counts a refused write and
    ``on_late(group, records)`` the records written after their deadline;
    ``on_written(key, lines)`` follows each write that succeeded (the JSON Lines
    text written at ``key``), for what is written next to an object.
    ``wall_clock`` gives record times, ``clock`` (monotonic) the buffer's age.
    """

    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        work: BackgroundWork,
        *,
        group: Callable[[Item], Group],
        render: Callable[[Item], Mapping[str, Any]],
        key: Callable[[Group, float, str], str],
        kind: str,
        on_failure: Callable[[Group, int, str], None],
        on_late: Callable[[Group, int], None],
        on_written: Callable[[str, str], None] = lambda key, lines: None,
        flush_records: int,
        flush_seconds: float,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._work = work
        self._group = group
        self._render = render
        self._key = key
        self._kind = kind
        self._on_failure = on_failure
        self._on_late = on_late
        self._on_written = on_written
        self._flush_records = max(1, flush_records)
        self._flush_seconds = flush_seconds
        self._wall_clock = wall_clock
        self._clock = clock
        # Reentrant: the SIGTERM handler may flush on the thread that holds it.
        self._lock = threading.RLock()
        self._pending: list[_Pending[Item]] = []
        self._oldest = 0.0
        self._previous: float | None = None
        self._flush_submitted = False
        self._timer: threading.Timer | None = None

    @property
    def buffered(self) -> int:
        """How many records wait for the next write."""
        with self._lock:
            return len(self._pending)

    def add(self, item: Item, at: float) -> None:
        """Keep ``item`` (answered at ``at``, wall clock) and submit a write when
        the durability rule says so."""
        now = self._clock()
        target = TARGET * self._flush_seconds
        with self._lock:
            if not self._pending:
                self._oldest = now
            self._pending.append(_Pending(item, at))
            gap = math.inf if self._previous is None else now - self._previous
            self._previous = now
            if self._flush_submitted:
                return
            age = now - self._oldest
            if self._work.deferred:
                due = age + QUIET_FACTOR * gap >= target
            else:
                due = age >= target
                if not due and self._timer is None:
                    self._timer = threading.Timer(target - age, self._submit_flush)
                    self._timer.daemon = True
                    self._timer.start()
            if not (due or len(self._pending) >= self._flush_records):
                return
            self._flush_submitted = True
        self._work.submit(self.flush)

    def _submit_flush(self) -> None:
        with self._lock:
            self._timer = None
            if self._flush_submitted or not self._pending:
                return
            self._flush_submitted = True
        self._work.submit(self.flush)

    def flush(self) -> None:
        """Write every buffered record now, one object per group. A refused write
        is logged and counted, never raised."""
        with self._lock:
            pending, self._pending = self._pending, []
            self._flush_submitted = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        self._write_groups(pending)

    def write(self, items: Iterable[tuple[Item, float]]) -> None:
        """Write ``items`` (each with its answer's wall-clock time) now, past the
        buffer: one object per group, counted like the buffer's writes."""
        self._write_groups([_Pending(item, at) for item, at in items])

    def _write_groups(self, pending: list[_Pending[Item]]) -> None:
        groups: dict[Group, list[_Pending[Item]]] = {}
        for entry in pending:
            groups.setdefault(self._group(entry.item), []).append(entry)
        for group, entries in groups.items():
            self._write(group, entries)

    def _write(self, group: Group, entries: list[_Pending[Item]]) -> None:
        lines = "".join(
            json.dumps(self._render(entry.item), default=_text) + "\n"
            for entry in entries
        )
        key = self._key(group, entries[0].at, uuid.uuid4().hex[:12])
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
                        "event": f"{self._kind}_failed",
                        "group": list(group),
                        "records": len(entries),
                        "error": reason,
                    }
                )
            )
            self._on_failure(group, len(entries), reason)
            return
        self._on_written(key, lines)
        written = self._wall_clock()
        late = sum(1 for e in entries if written - e.at > self._flush_seconds)
        if late:
            self._on_late(group, late)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def read_records(body: bytes) -> list[Mapping[str, Any]]:
    """The records of one object (its stored, compressed bytes)."""
    return [json.loads(line) for line in gzip.decompress(body).splitlines()]
