"""The job record: one job's document ``outgoing/X.manifest.json``, which is both
its record and its lease.

A job first claims the record with a conditional write (``IfNoneMatch`` or
``IfMatch`` on what it read), and every later write is conditional on the job's
previous one, so two deliveries of one event never both run and a job that lost
its claim cannot overwrite the winner's record. The input's ETag, kept in the
record, identifies the upload: the same ETag again is answered from the record,
a new one is processed afresh.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict

from chalicelib.clock import iso_timestamp
from chalicelib.documents import JsonDocuments
from chalicelib.errors import DocumentConflictError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# The record's "format" field (the key keeps its historic name: users read it).
RECORD_FORMAT = 1

RUNNING, SUCCEEDED, PARTIAL, FAILED = "running", "succeeded", "partial", "failed"
# Not a status a job writes: what a reader calls a running job whose claim expired.
DEAD = "dead"


class RowCounts(TypedDict):
    read: int
    predicted: int
    rejected: int


class Claim(TypedDict):
    """Who runs the job, and until when: past it, a running job is dead."""

    run_id: str
    expires_at: str


class Progress(TypedDict):
    """How far a running job is (a job in one invocation is one shard)."""

    shards_done: int
    shards: int
    bytes_done: int
    bytes: int
    rows_done: int
    updated_at: str


class JobRecord(TypedDict, total=False):
    """The job record ``outgoing/X.manifest.json``: the job's record and its lease.
    Every job has the first fields; ``claim`` and ``progress`` while it runs,
    ``error`` and ``retryable`` when it failed, ``shards`` when it fanned out."""

    format: int
    status: str
    model: str | None
    alias: str | None
    version: int | None
    rows: RowCounts
    input: dict[str, Any]
    output: dict[str, Any] | None
    errors: dict[str, Any] | None
    run_id: str
    started_at: str
    finished_at: str | None
    seconds: float | None
    claim: Claim
    progress: Progress
    error: str
    retryable: bool
    shards: list[dict[str, Any]]


@dataclass
class Counts:
    """Rows of a file (or of a part of it): read, predicted and rejected."""

    read: int = 0
    predicted: int = 0
    rejected: int = 0

    def to_dict(self) -> RowCounts:
        return {
            "read": self.read,
            "predicted": self.predicted,
            "rejected": self.rejected,
        }


class ClaimLostError(Exception):
    """Another job took the record over: this one must stop without writing."""


class RunEndedError(Exception):
    """A fanned-out run's record is no longer its running one: a re-upload
    superseded it, or it failed (another shard) or finished (another delivery)."""


def skip_reason(existing: JobRecord | None, etag: str, now: datetime) -> str | None:
    """Why a delivery for the object with ``etag`` must not run, given the job
    record found; None when it should (new object, stale claim, retryable failure)."""
    if existing is None or existing.get("input", {}).get("etag") != etag:
        return None
    status = job_state(existing, now)
    if status == RUNNING:
        return f"another delivery is processing it (until {claim_expiry(existing)})"
    if status in (SUCCEEDED, PARTIAL):
        return f"already {status}"
    if status == FAILED and not existing.get("retryable", False):
        return "already failed, for a reason a retry would not change"
    return None


def claim_expiry(document: JobRecord) -> str:
    """When a running job's claim expires (an ISO timestamp; '' when unknown)."""
    claim = document.get("claim")
    return claim["expires_at"] if claim else ""


def job_state(document: JobRecord, now: datetime) -> str:
    """The record's status, or DEAD for a running job whose claim has expired:
    the function stopped (killed, out of memory) without writing its end."""
    status = document.get("status", "")
    if status == RUNNING and claim_expiry(document) <= iso_timestamp(now):
        return DEAD
    return status


def ended_record(document: JobRecord, status: str, now: datetime) -> JobRecord:
    """A running fanned-out job's record, ended with ``status`` at ``now``."""
    ended = document.copy()
    ended.pop("claim", None)
    ended["status"] = status
    ended["finished_at"] = iso_timestamp(now)
    ended["seconds"] = seconds_since(document["started_at"], now)
    return ended


def seconds_since(started_at: str, now: datetime) -> float:
    """Seconds from an ISO timestamp of the record to ``now``."""
    started = datetime.fromisoformat(started_at.replace("Z", "+00:00"))
    return round((now - started).total_seconds(), 3)


class Ledger:
    """Reads and writes one job's record; each write is conditional on the last
    one this ledger saw, so a job that lost its claim cannot write."""

    def __init__(self, s3: S3Client, bucket: str, key: str) -> None:
        self.documents = JsonDocuments(s3, bucket)
        self.key = key
        self._etag: str | None = None

    def read(self) -> JobRecord | None:
        """The record (None when there is none), remembered as the last seen."""
        found = self.documents.read(self.key)
        if found is None:
            self._etag = None
            return None
        document: JobRecord
        document, self._etag = found
        return document

    def write(self, document: JobRecord) -> None:
        """Replace what this ledger last saw; ClaimLostError if someone else did."""
        try:
            self._etag = self.documents.write(self.key, document, etag=self._etag)
        except DocumentConflictError:
            raise ClaimLostError(self.key) from None

    def check_held(self) -> None:
        """ClaimLostError unless the record is still the one this job wrote."""
        etag = self.documents.etag(self.key)
        if etag is None or etag != self._etag:
            raise ClaimLostError(self.key)

    def read_while(self, holds: Callable[[JobRecord], bool]) -> JobRecord | None:
        """The record if there is one and ``holds`` says it is still the reader's,
        else None."""
        document = self.read()
        return document if document is not None and holds(document) else None

    def update_while(
        self,
        holds: Callable[[JobRecord], bool],
        change: Callable[[JobRecord], JobRecord | None],
    ) -> JobRecord | None:
        """Apply ``change`` to the record (None from it: leave it as it is), read
        again and retried until the write wins, as long as ``holds`` says the
        record is still the writer's. The record written (or left), or None when
        it no longer holds."""
        while True:
            document = self.read_while(holds)
            if document is None:
                return None
            changed = change(document)
            if changed is None:
                return document
            try:
                self.write(changed)
            except ClaimLostError:
                continue
            return changed
