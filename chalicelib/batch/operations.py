"""Operator operations on batch jobs: submit, status, list, follow, retry.

What ``turnout batch`` calls, and what the tests, an SDK or a scheduled function
call alike. Each takes its S3 client and the batch bucket; the time comes in as
``now`` or a clock and waiting as a ``sleep``, so that nothing here waits for real
in a test. Keys are spelled by ``chalicelib.batch.keys`` only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from chalicelib.batch import keys
from chalicelib.batch.record import (
    FAILED,
    PARTIAL,
    RUNNING,
    SUCCEEDED,
    JobRecord,
    Ledger,
    claim_expiry,
    job_state,
)
from chalicelib.documents import is_missing, is_precondition_failure
from chalicelib.errors import (
    AliasNotFoundError,
    BatchJobNotFoundError,
    BatchRetryRefusedError,
    ModelNotFoundError,
    VersionNotFoundError,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Where ``submit`` keeps the uploaded content's SHA-256, to know it again.
CONTENT_SHA256 = "turnout-sha256"
# Above this size ``submit`` uploads in parts (boto3's transfer manager).
MULTIPART_THRESHOLD = 64 * 1024 * 1024
# How many hex digits of the content's SHA-256 name an upload.
SHORT_HASH = 12

# Why a job failed, as far as what to do next goes (``failure_cause``).
UNKNOWN_MODEL, UNKNOWN_ALIAS, UNKNOWN_VERSION = "model", "alias", "version"
RETRYABLE, PERMANENT = "retryable", "permanent"


@dataclass(frozen=True)
class JobStatus:
    """A job as a reader sees it: its input key, its state and its job record."""

    key: str
    state: str
    record: JobRecord

    def to_dict(self) -> dict[str, Any]:
        # "manifest" is the field scripts read: it stays.
        return {"key": self.key, "state": self.state, "manifest": self.record}


@dataclass(frozen=True)
class Submission:
    """What ``submit`` did: ``uploaded`` is False when the same content was
    already at ``key`` (its job is not run again; ``job`` is its job, if it
    started)."""

    key: str
    etag: str
    size: int
    uploaded: bool
    job: JobStatus | None = None


def content_sha256(path: Path) -> str:
    """The SHA-256 of the file at ``path``, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def upload_name(path: Path, sha256: str) -> str:
    """'data.csv.gz' -> 'data-0123456789ab.csv.gz': the local name with the start
    of its content's hash, so two different files of one name never share a job
    and the same content always lands on the same key."""
    name = path.name
    compressed = name.lower().endswith(".gz")
    plain = name[:-3] if compressed else name
    stem, dot, extension = plain.rpartition(".")
    if not dot or not stem:
        stem, extension = plain, ""
    tagged = f"{stem}-{sha256[:SHORT_HASH]}"
    return tagged + (f".{extension}" if extension else "") + (".gz" * compressed)


@dataclass(frozen=True)
class Upload:
    """A local file and the key it goes to (``prepare``)."""

    path: Path
    key: str
    sha256: str
    size: int


def prepare(path: Path, model: str, *, name: str | None = None) -> Upload:
    """Where the local file ``path`` goes for ``model`` (NAME, NAME@ALIAS or
    NAME@VERSION): ``incoming/{model}/{name}``, ``name`` defaulting to
    ``upload_name``. BatchKeyError or BatchFileError when that key would not make
    a job, before anything is uploaded."""
    sha256 = content_sha256(path)
    key = f"{keys.INCOMING}{model}/{name or upload_name(path, sha256)}"
    keys.parse_key(key)
    return Upload(path, key, sha256, path.stat().st_size)


def submit(
    s3: S3Client,
    bucket: str,
    upload: Upload,
    *,
    now: datetime,
    on_bytes: Callable[[int], None] | None = None,
) -> Submission:
    """Upload a prepared file to its key, which starts its job.

    The same content already at that key is not uploaded again (``uploaded``
    False, with its job if it started). Large files go up in parts; ``on_bytes``
    hears of each chunk sent.
    """
    key = upload.key
    existing = _head(s3, bucket, key)
    if (
        existing is not None
        and existing["Metadata"].get(CONTENT_SHA256) == upload.sha256
    ):
        etag = existing["ETag"]
        record = Ledger(s3, bucket, keys.record_key(key)).read()
        job = None
        if record is not None and record.get("input", {}).get("etag") == etag:
            job = JobStatus(key, job_state(record, now), record)
        return Submission(key, etag, upload.size, uploaded=False, job=job)

    from boto3.s3.transfer import TransferConfig

    s3.upload_file(
        str(upload.path),
        bucket,
        key,
        ExtraArgs={"Metadata": {CONTENT_SHA256: upload.sha256}},
        Callback=on_bytes,
        Config=TransferConfig(multipart_threshold=MULTIPART_THRESHOLD),
    )
    etag = s3.head_object(Bucket=bucket, Key=key)["ETag"]
    return Submission(key, etag, upload.size, uploaded=True)


def _head(s3: S3Client, bucket: str, key: str) -> Any:
    try:
        return s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if is_missing(error):
            return None
        raise


def status(s3: S3Client, bucket: str, key: str, *, now: datetime) -> JobStatus:
    """The job of the input at ``key`` (under incoming/) and its state (running,
    succeeded, partial, failed or dead). BatchKeyError for a key outside
    incoming/; BatchJobNotFoundError when it has no job record."""
    record = Ledger(s3, bucket, keys.record_key(key)).read()
    if record is None:
        raise BatchJobNotFoundError(key)
    return JobStatus(key, job_state(record, now), record)


def list_jobs(
    s3: S3Client, bucket: str, *, since: timedelta, now: datetime
) -> list[JobStatus]:
    """The jobs whose record changed in the last ``since``, oldest start first."""
    jobs = []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=keys.OUTGOING
    ):
        for item in page.get("Contents", []):
            name = item["Key"]
            if not keys.is_record_key(name) or item["LastModified"] < now - since:
                continue
            record = Ledger(s3, bucket, name).read()
            if record is not None:
                jobs.append(
                    JobStatus(keys.input_key(name), job_state(record, now), record)
                )
    return sorted(jobs, key=lambda job: job.record["started_at"])


def follow(
    s3: S3Client,
    bucket: str,
    key: str,
    etag: str,
    *,
    clock: Callable[[], datetime],
    sleep: Callable[[float], None],
    on_progress: Callable[[JobRecord], None] | None = None,
    interval: float = 1.0,
) -> JobStatus:
    """Wait until the job of the upload ``etag`` at ``key`` has ended (succeeded,
    partial, failed, or dead: its claim expired), reading its record every
    ``interval`` seconds; ``on_progress`` gets each running record."""
    ledger = Ledger(s3, bucket, keys.record_key(key))
    while True:
        record = ledger.read()
        if record and record.get("input", {}).get("etag") == etag:
            state = job_state(record, clock())
            if state != RUNNING:
                return JobStatus(key, state, record)
            if on_progress is not None:
                on_progress(record)
        sleep(interval)


def failure_cause(record: JobRecord) -> str:
    """Why a failed job failed, as far as what to do next goes: an unknown model,
    alias or version (fix the key or register what it names), a retryable
    failure, or a permanent one (fix the file)."""
    error, model = record.get("error"), record.get("model") or ""
    alias, version = record.get("alias"), record.get("version")
    if error == str(ModelNotFoundError(model)):
        return UNKNOWN_MODEL
    if alias is not None and error == str(AliasNotFoundError(model, alias)):
        return UNKNOWN_ALIAS
    if version is not None and error == str(VersionNotFoundError(model, version)):
        return UNKNOWN_VERSION
    return RETRYABLE if record.get("retryable") else PERMANENT


def retry(s3: S3Client, bucket: str, key: str, *, now: datetime) -> JobRecord:
    """Run the job of the file at ``key`` again, without uploading it again.

    The file is copied onto itself with new metadata: S3 sends a new event to the
    batch function, which runs where and as every job runs (its memory, timeout,
    role and logs), and finds the job dead or retryably failed so takes it over.
    The copy is conditional on the ETag in the job record, so a retry never runs
    a file other than the one that failed. Returns the job record as it was.
    BatchKeyError for a key outside incoming/; BatchJobNotFoundError without a job
    record; BatchRetryRefusedError when the job is live, done, or failed for a
    reason a retry would not change.
    """
    job = status(s3, bucket, key, now=now)
    document, state = job.record, job.state
    if state == RUNNING:
        raise BatchRetryRefusedError(
            key, f"it is running (its claim holds until {claim_expiry(document)})"
        )
    if state in (SUCCEEDED, PARTIAL):
        raise BatchRetryRefusedError(
            key, f"it already {state}: upload the rows to predict as a new file"
        )
    if state == FAILED and not document.get("retryable", False):
        raise BatchRetryRefusedError(
            key,
            f"it failed for a reason a retry would not change ({document.get('error')})"
            ": fix the file and upload it again",
        )
    etag = document.get("input", {}).get("etag", "")
    try:
        head = s3.head_object(Bucket=bucket, Key=key, IfMatch=etag)
        s3.copy_object(
            Bucket=bucket,
            Key=key,
            CopySource={"Bucket": bucket, "Key": key},
            CopySourceIfMatch=etag,
            MetadataDirective="REPLACE",
            Metadata={
                **head.get("Metadata", {}),
                "turnout-retry-of": document["run_id"],
            },
            ContentType=head.get("ContentType", "binary/octet-stream"),
        )
    except ClientError as error:
        if is_missing(error):
            raise BatchRetryRefusedError(key, "the file is gone") from None
        if is_precondition_failure(error):
            raise BatchRetryRefusedError(
                key, "the file was replaced since; the new upload has its own job"
            ) from None
        raise
    return document
