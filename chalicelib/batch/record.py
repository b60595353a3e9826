"""The job record: a job's manifest, which is both its record and its lease.

A job first claims the manifest with a conditional write (``IfNoneMatch`` or
``IfMatch`` on what it read), and every later write is conditional on the job's
previous one, so two deliveries of one event never both run and a job that lost
its claim cannot overwrite the winner's record. The input's ETag, kept in the
record, identifies the upload: the same ETag again is answered from the manifest,
a new one is processed afresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from chalicelib.documents import JsonDocuments
from chalicelib.errors import DocumentConflictError
from chalicelib.registry import iso_timestamp

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MANIFEST_FORMAT = 1

RUNNING, SUCCEEDED, PARTIAL, FAILED = "running", "succeeded", "partial", "failed"
# Not a status a job writes: what a reader calls a running job whose claim expired.
DEAD = "dead"


@dataclass
class Counts:
    """Rows of a file (or of a part of it): read, predicted and rejected."""

    read: int = 0
    predicted: int = 0
    rejected: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "read": self.read,
            "predicted": self.predicted,
            "rejected": self.rejected,
        }


class ClaimLostError(Exception):
    """Another job took the manifest over: this one must stop without writing."""


def skip_reason(
    existing: dict[str, Any] | None, etag: str, now: datetime
) -> str | None:
    """Why a delivery for the object with ``etag`` must not run, given the manifest
    found; None when it should (new object, stale claim, retryable failure)."""
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


def claim_expiry(document: dict[str, Any]) -> str:
    """When a running job's claim expires (an ISO timestamp; '' when unknown)."""
    expires: str = document.get("claim", {}).get("expires_at", "")
    return expires


def job_state(document: dict[str, Any], now: datetime) -> str:
    """The manifest's status, or DEAD for a running job whose claim has expired:
    the function stopped (killed, out of memory) without writing its end."""
    status: str = document.get("status", "")
    if status == RUNNING and claim_expiry(document) <= iso_timestamp(now):
        return DEAD
    return status


class Ledger:
    """Reads and writes one job's manifest; each write is conditional on the last
    one this ledger saw, so a job that lost its claim cannot write."""

    def __init__(self, s3: S3Client, bucket: str, key: str) -> None:
        self.documents = JsonDocuments(s3, bucket)
        self.key = key
        self._etag: str | None = None

    def read(self) -> dict[str, Any] | None:
        """The manifest (None when there is none), remembered as the last seen."""
        found = self.documents.read(self.key)
        if found is None:
            self._etag = None
            return None
        document, self._etag = found
        return dict(document)

    def write(self, document: dict[str, Any]) -> None:
        """Replace what this ledger last saw; ClaimLostError if someone else did."""
        try:
            self._etag = self.documents.write(self.key, document, etag=self._etag)
        except DocumentConflictError:
            raise ClaimLostError(self.key) from None

    def check_held(self) -> None:
        """ClaimLostError unless the manifest is still the one this job wrote."""
        etag = self.documents.etag(self.key)
        if etag is None or etag != self._etag:
            raise ClaimLostError(self.key)
