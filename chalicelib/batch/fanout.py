"""Fanning a file out: the shard messages, the queue they go through, where the
file is cut, and the running job's record as its shards see it.

The batch function (``job``) claims the file's manifest as for any job, cuts the
file into line-aligned byte ranges (``shards.cut_shards``), writes the running
manifest with the run's plan and sends one message per shard. Each shard is
predicted by an invocation of the shard function (``shard``); its record
operations below are compare-and-swap writes on the manifest that hold only while
the manifest is still this run's, so a re-upload (a new run) or a failure ends
every shard of the old run quietly.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from botocore.exceptions import ClientError

from chalicelib.batch.keys import BatchKey, ShardDone
from chalicelib.batch.pipeline import Header
from chalicelib.batch.record import FAILED, RUNNING, JobRecord, Progress, RowCounts
from chalicelib.batch.shards import Shard, cut_shards
from chalicelib.batch.tables.formats import CSV
from chalicelib.batch.tables.records import (
    MAX_HEADER_BYTES,
    MAX_RECORD_BYTES,
    RecordSplitter,
)
from chalicelib.config import Settings
from chalicelib.documents import JsonDocuments, is_precondition_failure
from chalicelib.errors import DocumentConflictError, SourceChangedError
from chalicelib.registry import iso_timestamp

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

logger = logging.getLogger("turnout.batch")

_BOM = b"\xef\xbb\xbf"
# SendMessageBatch takes at most ten messages.
_SEND_BATCH = 10


@dataclass(frozen=True)
class ShardTask:
    """One shard's message: which run, which bytes, and the version to run."""

    bucket: str
    key: str
    etag: str
    run_id: str
    version: int
    index: int
    count: int
    start: int
    end: int
    data_start: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, body: str) -> ShardTask:
        """The task in a message body; ValueError when it is not one."""
        try:
            return cls(**json.loads(body))
        except (TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"not a shard message: {error}") from None


class ShardQueue(Protocol):
    """Where shard messages go."""

    def send(self, bodies: list[str]) -> None:
        """Send every body, or raise."""


class SqsShardQueue:
    """The SQS queue that feeds the shard function. Its client is made, and its
    URL looked up, on the first send: a small file's job pays for neither."""

    def __init__(self, sqs: Callable[[], SQSClient], name: str) -> None:
        self._client = sqs
        self.name = name
        self._url: str | None = None

    @functools.cached_property
    def sqs(self) -> SQSClient:
        return self._client()

    def send(self, bodies: list[str]) -> None:
        """Send every body; RuntimeError naming the first one SQS refused."""
        if self._url is None:
            self._url = self.sqs.get_queue_url(QueueName=self.name)["QueueUrl"]
        for first in range(0, len(bodies), _SEND_BATCH):
            entries = [
                {"Id": str(number), "MessageBody": body}
                for number, body in enumerate(bodies[first : first + _SEND_BATCH])
            ]
            response = self.sqs.send_message_batch(QueueUrl=self._url, Entries=entries)  # type: ignore[arg-type]
            for failed in response.get("Failed", []):
                raise RuntimeError(
                    f"SQS refused shard message {failed['Id']} on {self.name}: "
                    f"{failed.get('Code')} {failed.get('Message', '')}"
                )


def read_range(
    s3: S3Client, bucket: str, key: str, etag: str, start: int, end: int
) -> bytes:
    """Bytes ``start`` to ``end`` (exclusive) of the object, if still at ``etag``."""
    try:
        response = s3.get_object(
            Bucket=bucket, Key=key, IfMatch=etag, Range=f"bytes={start}-{end - 1}"
        )
    except ClientError as error:
        if is_precondition_failure(error):
            raise SourceChangedError(key) from None
        raise
    return response["Body"].read()


def read_header(
    read: Callable[[int, int], bytes], size: int
) -> tuple[Header | None, int]:
    """A CSV file's header and the offset of its first data byte (after the
    header's line end), from ranged reads of its start. (None, size) when the file
    is all header."""
    head = read(0, min(size, MAX_HEADER_BYTES + len(_BOM) + 2))
    splitter = RecordSplitter(
        1, quoted=True, header=True, max_record_bytes=MAX_RECORD_BYTES
    )
    splitter.feed(head)
    if splitter.header is None:
        return None, size
    end = len(_BOM) if head.startswith(_BOM) else 0
    end += len(splitter.header)
    end += head[end : end + 1] == b"\r"
    return Header(splitter.header, splitter.header_lines), end + 1


def plan_shards(
    s3: S3Client,
    bucket: str,
    key: str,
    etag: str,
    size: int,
    batch_key: BatchKey,
    settings: Settings,
) -> tuple[list[Shard], int]:
    """The shards of an uncompressed file and where its data starts (after the
    CSV header); one shard when the file is no larger than a shard or has no line
    end to cut at."""

    def read(start: int, end: int) -> bytes:
        return read_range(s3, bucket, key, etag, start, end)

    data_start = 0
    if batch_key.fmt == CSV:
        _, data_start = read_header(read, size)
    shards = cut_shards(
        size,
        data_start=data_start,
        shard_bytes=settings.batch_shard_bytes,
        read=read,
        max_record_bytes=MAX_RECORD_BYTES,
    )
    return shards, data_start


def wants_fan_out(size: int, batch_key: BatchKey, settings: Settings) -> bool:
    """Whether a file is a candidate for fan-out: uncompressed (a gzip stream cannot
    be entered mid-way) and larger than a shard."""
    return 0 < settings.batch_shard_bytes < size and not batch_key.compressed


def list_keys(s3: S3Client, bucket: str, prefix: str) -> Iterator[str]:
    """Every key under ``prefix``, in order."""
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            yield item["Key"]


def delete_keys(s3: S3Client, bucket: str, keys: list[str]) -> None:
    """Delete ``keys`` (a thousand per request, S3's bound)."""
    for first in range(0, len(keys), 1000):
        batch = keys[first : first + 1000]
        s3.delete_objects(
            Bucket=bucket,
            Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
        )


def delete_parts(
    s3: S3Client, bucket: str, prefix: str, *, keep: str | None = None
) -> None:
    """Delete the objects under ``prefix`` (but those under ``keep``) and abort the
    multipart uploads to it: a fanned-out run's intermediate objects."""
    doomed = [
        found
        for found in list_keys(s3, bucket, prefix)
        if keep is None or not found.startswith(keep)
    ]
    delete_keys(s3, bucket, doomed)
    uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    for upload in uploads.get("Uploads", []):
        if keep is None or not upload["Key"].startswith(keep):
            s3.abort_multipart_upload(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )


class RunEndedError(Exception):
    """The run's manifest is no longer its running one: a re-upload superseded it,
    or it failed (another shard) or finished (another delivery)."""


class RunRecord:
    """The manifest as one fanned-out run's shards see it: every change is a
    compare-and-swap that holds only while the manifest is this run's and running.
    """

    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        manifest_key: str,
        task: ShardTask,
        clock: Callable[[], datetime],
    ) -> None:
        self.documents = JsonDocuments(s3, bucket)
        self.key = manifest_key
        self.task = task
        self.clock = clock
        self.etag: str | None = None

    def current(self) -> JobRecord | None:
        """The manifest if it is still this run's running one, else None."""
        found = self.documents.read(self.key)
        if found is None:
            return None
        document: JobRecord
        document, self.etag = found
        if (
            document.get("status") != RUNNING
            or document.get("run_id") != self.task.run_id
            or document.get("input", {}).get("etag") != self.task.etag
        ):
            return None
        return document

    def update(
        self, change: Callable[[JobRecord], JobRecord | None]
    ) -> JobRecord | None:
        """Apply ``change`` to the manifest (None from it: leave it as it is) until
        the write wins; the document written, or None when the run is over."""
        while True:
            document = self.current()
            if document is None:
                return None
            changed = change(document)
            if changed is None:
                return document
            try:
                self.etag = self.documents.write(self.key, changed, etag=self.etag)
            except DocumentConflictError:
                continue
            return changed

    def fail(self, error: str, *, retryable: bool) -> JobRecord | None:
        """End the run as failed with ``error``; None when it had already ended."""
        now = self.clock()

        def failed(document: JobRecord) -> JobRecord:
            ended = ended_record(document, FAILED, now)
            ended["error"] = error
            ended["retryable"] = retryable
            return ended

        return self.update(failed)

    def report_progress(
        self, done: list[ShardDone], *, every: float, lease: float
    ) -> bool:
        """Write how far the run is, unless that was written less than ``every``
        seconds ago; each write extends the claim by ``lease`` seconds. Whether it
        wrote."""
        now = self.clock()

        def progressed(document: JobRecord) -> JobRecord | None:
            if document["progress"]["updated_at"] > iso_timestamp(
                now - timedelta(seconds=every)
            ):
                return None
            expires = iso_timestamp(now + timedelta(seconds=lease))
            claim = document["claim"]
            changed = document.copy()
            changed["rows"] = summed_rows(done)
            changed["progress"] = progress(done, document["progress"], now)
            changed["claim"] = {
                "run_id": claim["run_id"],
                "expires_at": max(expires, claim["expires_at"]),
            }
            return changed

        written = self.update(progressed)
        return written is not None and written.get("progress", {}).get(
            "updated_at"
        ) == iso_timestamp(now)


def ended_record(document: JobRecord, status: str, now: datetime) -> JobRecord:
    """A running fanned-out job's record, ended with ``status`` at ``now``."""
    ended = document.copy()
    ended.pop("claim", None)
    ended["status"] = status
    ended["finished_at"] = iso_timestamp(now)
    ended["seconds"] = seconds_since(document["started_at"], now)
    return ended


def summed_rows(done: list[ShardDone]) -> RowCounts:
    return {
        "read": sum(marker.read for marker in done),
        "predicted": sum(marker.predicted for marker in done),
        "rejected": sum(marker.rejected for marker in done),
    }


def progress(done: list[ShardDone], previous: Progress, now: datetime) -> Progress:
    """A running fanned-out job's progress: shards, bytes and rows done."""
    return {
        "shards_done": len(done),
        "shards": previous["shards"],
        "bytes_done": sum(marker.size for marker in done),
        "bytes": previous["bytes"],
        "rows_done": sum(marker.read for marker in done),
        "updated_at": iso_timestamp(now),
    }


def seconds_since(started_at: str, now: datetime) -> float:
    """Seconds from an ISO timestamp of the manifest to ``now``."""
    started = datetime.fromisoformat(started_at.replace("Z", "+00:00"))
    return round((now - started).total_seconds(), 3)


def shard_tasks(
    bucket: str,
    key: str,
    etag: str,
    run_id: str,
    version: int,
    shards: list[Shard],
    data_start: int,
) -> list[ShardTask]:
    return [
        ShardTask(
            bucket=bucket,
            key=key,
            etag=etag,
            run_id=run_id,
            version=version,
            index=shard.index,
            count=len(shards),
            start=shard.start,
            end=shard.end,
            data_start=data_start,
        )
        for shard in shards
    ]
