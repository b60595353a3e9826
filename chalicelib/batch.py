"""Batch predictions: stream a file uploaded under ``incoming/`` through the model
and write its predictions, manifest and error report under ``outgoing/``.

Layout, in the batch bucket::

    incoming/{model}/{path}             the stage's default alias
    incoming/{model}@{alias}/{path}     an alias (the whole file routed by its key)
    incoming/{model}@{version}/{path}   a pinned version
    outgoing/{model...}/{path}.out            predictions, one row per predicted row
    outgoing/{model...}/{path}.manifest.json  the job: status, version, counts, why
    outgoing/{model...}/{path}.errors.jsonl   rejected rows, when there are any

The manifest is both the job's record and its lease. A job first claims it with a
conditional write (``IfNoneMatch`` or ``IfMatch`` on what it read), and every later
write is conditional on the job's previous one, so two deliveries of one event
never both run and a job that lost its claim cannot overwrite the winner's
record. The object's ETag, read before anything else, identifies the input: the
same ETag again is answered from the manifest, a new one is processed afresh.

The file is streamed: a reader thread fetches and decompresses blocks, the caller's
thread parses, predicts and formats chunks of rows, and an uploader thread sends
output parts as they fill. ``.out`` becomes visible only when its multipart upload
completes, after the last row; a failure aborts the upload instead. Every write to
an output is conditional on the object as the job last saw it, just after checking
its claim: a job superseded in between fails the condition and ends quietly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from chalicelib import tabular
from chalicelib.config import INCOMING_PREFIX, OUTGOING_PREFIX, Settings
from chalicelib.documents import error_code, is_missing, is_precondition_failure
from chalicelib.errors import (
    BatchFileError,
    BatchJobNotFoundError,
    BatchKeyError,
    BatchRetryRefusedError,
    BatchStartedTooLateError,
    BatchTimeLimitError,
    NotFoundError,
    SourceChangedError,
    TurnoutError,
)
from chalicelib.names import (
    is_version,
    parse_version,
    validate_alias_name,
    validate_model_name,
)
from chalicelib.observe import Observer, observe_batch_file
from chalicelib.predict import Predictor, Target
from chalicelib.registry import iso_timestamp, utc_now

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger("turnout.batch")

INCOMING = INCOMING_PREFIX
OUTGOING = OUTGOING_PREFIX
MANIFEST_FORMAT = 1

RUNNING, SUCCEEDED, PARTIAL, FAILED = "running", "succeeded", "partial", "failed"
# Not a status a job writes: what a reader calls a running job whose claim expired.
DEAD = "dead"
FORMATS = {".csv": tabular.CSV, ".jsonl": tabular.JSONL, ".ndjson": tabular.JSONL}
CONTENT_TYPES = {tabular.CSV: "text/csv", tabular.JSONL: "application/x-ndjson"}
_GZIP_MAGIC = b"\x1f\x8b"
# Output is compressed when the input was, at a level that keeps up with the rows.
_GZIP_LEVEL = 1


# -- keys -------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchKey:
    """An input key taken apart: who predicts and how the file reads."""

    key: str
    model: str
    alias: str | None
    version: int | None
    fmt: str
    compressed: bool


def outputs_base(key: str) -> str:
    """``incoming/X`` -> ``outgoing/X``: the outputs' common prefix."""
    return OUTGOING + key.removeprefix(INCOMING)


def is_batch_input(key: str) -> bool:
    """Whether ``key`` is a file under ``incoming/`` (folder markers are not)."""
    return key.startswith(INCOMING) and not key.endswith("/")


def parse_key(key: str) -> BatchKey:
    """Read the model, its alias or version, and the format from an input key.

    BatchKeyError when the key has no model folder or names an invalid model,
    alias or version; BatchFileError for an unknown file format.
    """
    folder, slash, path = key.removeprefix(INCOMING).partition("/")
    if not slash or not path:
        raise BatchKeyError(key, "has no model folder")
    model, at, selector = folder.partition("@")
    alias: str | None = None
    version: int | None = None
    try:
        validate_model_name(model)
        if at and is_version(selector):
            version = parse_version(selector)
        elif at:
            alias = validate_alias_name(selector)
    except TurnoutError as error:
        raise BatchKeyError(key, f"has an invalid model folder: {error}") from None
    name = path.rsplit("/", 1)[-1].lower()
    compressed = name.endswith(".gz")
    stem = name.removesuffix(".gz")
    extension = "." + stem.rsplit(".", 1)[-1] if "." in stem else ""
    if extension not in FORMATS:
        *others, last = FORMATS
        known = f"{', '.join(others)} or {last}"
        raise BatchFileError(
            f"unknown format {extension or 'without extension'!r}: name the file "
            f"{known}, optionally followed by .gz"
        )
    return BatchKey(key, model, alias, version, FORMATS[extension], compressed)


# -- the manifest as a lease ----------------------------------------------------


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


def retry_job(s3: S3Client, bucket: str, key: str, *, now: datetime) -> dict[str, Any]:
    """Run the job of the file at ``key`` again, without uploading it again.

    The file is copied onto itself with new metadata: S3 sends a new event to the
    batch function, which runs where and as every job runs (its memory, timeout,
    role and logs), and finds the job dead or retryably failed so takes it over.
    The copy is conditional on the ETag in the manifest, so a retry never runs a
    file other than the one that failed. Returns the manifest as it was.
    BatchJobNotFoundError without a manifest; BatchRetryRefusedError when the job
    is live, done, or failed for a reason a retry would not change.
    """
    document = Ledger(s3, bucket, outputs_base(key) + ".manifest.json").read()
    if document is None:
        raise BatchJobNotFoundError(key)
    state = job_state(document, now)
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


class Ledger:
    """Reads and writes one job's manifest; each write is conditional on the last
    one this ledger saw, so a job that lost its claim cannot write."""

    def __init__(self, s3: S3Client, bucket: str, key: str) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.key = key
        self._etag: str | None = None

    def read(self) -> dict[str, Any] | None:
        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as error:
            if is_missing(error):
                self._etag = None
                return None
            raise
        self._etag = response["ETag"]
        document: dict[str, Any] = json.loads(response["Body"].read())
        return document

    def write(self, document: dict[str, Any]) -> None:
        """Replace what this ledger last saw; ClaimLostError if someone else did."""
        condition = {"IfMatch": self._etag} if self._etag else {"IfNoneMatch": "*"}
        try:
            response = self.s3.put_object(
                Bucket=self.bucket,
                Key=self.key,
                Body=json.dumps(document, indent=2).encode(),
                ContentType="application/json",
                **condition,  # type: ignore[arg-type]
            )
        except ClientError as error:
            if is_precondition_failure(error) or is_missing(error):
                raise ClaimLostError(self.key) from None
            raise
        self._etag = response["ETag"]

    def check_held(self) -> None:
        """ClaimLostError unless the manifest is still the one this job wrote."""
        try:
            etag = self.s3.head_object(Bucket=self.bucket, Key=self.key)["ETag"]
        except ClientError as error:
            if is_missing(error):
                raise ClaimLostError(self.key) from None
            raise
        if etag != self._etag:
            raise ClaimLostError(self.key)


# -- streaming the input --------------------------------------------------------

_END = object()


class Prefetch[T]:
    """Runs a generator on its own thread, at most ``depth`` items ahead of the
    consumer, so that reading, parsing and predicting overlap. The producer's
    exception is raised in the consumer; ``close`` stops the producer."""

    def __init__(self, produce: Iterator[T], *, depth: int, name: str) -> None:
        self._produce = produce
        self._queue: queue.Queue[object] = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item  # type: ignore[misc]

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._thread.join()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._produce:
                if not self._put(item):
                    break
            else:
                self._put(_END)
        except BaseException as error:  # handed to the consumer, which raises it
            self._put(_Failure(error))
        finally:
            close = getattr(self._produce, "close", None)
            if close is not None:
                close()


@dataclass(frozen=True)
class _Failure:
    error: BaseException


class SourceStream:
    """The object's bytes, decompressed, in blocks of at most ``block_bytes``.

    The GET is conditional on ``etag``: a replaced object raises
    SourceChangedError rather than mixing two uploads. ``bytes_read`` counts the
    stored (compressed) bytes consumed so far. ``check_time`` is called wherever
    decompression can loop without producing a block (empty gzip members).
    """

    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        key: str,
        etag: str,
        *,
        block_bytes: int,
        compressed: bool,
        check_time: Callable[[], None],
    ) -> None:
        self._request = {"Bucket": bucket, "Key": key, "IfMatch": etag}
        self._s3 = s3
        self._key = key
        self._block = block_bytes
        self._compressed = compressed
        self._check_time = check_time
        self.bytes_read = 0

    def blocks(self) -> Iterator[bytes]:
        try:
            response = self._s3.get_object(**self._request)  # type: ignore[arg-type]
        except ClientError as error:
            if is_precondition_failure(error):
                raise SourceChangedError(self._key) from None
            raise
        body = response["Body"]
        inflate = _Gunzip(self._block, self._check_time) if self._compressed else None
        while raw := body.read(self._block):
            self.bytes_read += len(raw)
            if inflate:
                yield from inflate.feed(raw)
            else:
                yield raw
        if inflate:
            inflate.finish()


class _Gunzip:
    """Incremental gzip decompression (members one after another).

    Each step inflates at most ``limit`` bytes and hands them on before the next
    one, so memory stays flat whatever the compression ratio; ``check_time`` runs
    before every step, productive or not.
    """

    def __init__(self, limit: int, check_time: Callable[[], None]) -> None:
        self._limit = limit
        self._check_time = check_time
        self._inflater = zlib.decompressobj(wbits=31)
        self._inside_member = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decompressed blocks of ``data``, one at a time."""
        while data:
            self._check_time()
            self._inside_member = True
            try:
                block = self._inflater.decompress(data, self._limit)
            except zlib.error as error:
                raise BatchFileError(f"not a valid gzip file: {error}") from None
            if block:
                yield block
            if self._inflater.eof:
                self._inside_member = False
                data = self._inflater.unused_data
                self._inflater = zlib.decompressobj(wbits=31)
            else:
                data = self._inflater.unconsumed_tail

    def finish(self) -> None:
        if self._inside_member:
            raise BatchFileError("the gzip stream is truncated")


# -- streaming an output --------------------------------------------------------


class StreamingUpload:
    """An S3 object written in parts by a background thread, visible only once
    ``publish`` completes it: a single PutObject when it fits in one part, else a
    multipart upload. ``abort`` leaves nothing behind."""

    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        key: str,
        *,
        part_bytes: int,
        content_type: str,
        metadata: dict[str, str],
        compress: bool = False,
        depth: int = 2,
    ) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.key = key
        self._part_bytes = part_bytes
        self._content_type = content_type
        self._metadata = metadata
        self._deflater = (
            zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 31) if compress else None
        )
        self._queue: queue.Queue[object] = queue.Queue(depth)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._parts: list[dict[str, Any]] = []
        self._upload_id: str | None = None
        self._error: BaseException | None = None
        self._aborting = False
        self._written = False
        self._thread: threading.Thread | None = None
        self._tail: bytes | None = None
        self.size = 0

    @property
    def written(self) -> bool:
        """Whether anything was written (or is on its way)."""
        return self._written

    def write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._written = True
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._upload, name="turnout-batch-upload", daemon=True
            )
            self._thread.start()
        self._queue.put(data)

    def seal(self) -> None:
        """Send everything written; only ``publish`` is left to do."""
        if self._tail is not None:
            return
        self._drain()
        self._tail = self._take(final=True)
        if self._upload_id is not None:
            if self._tail or not self._parts:
                self._send_part(self._tail)
            self._tail = b""

    def publish(self, condition: dict[str, str]) -> int:
        """Make the sealed object visible under ``condition`` (``IfMatch`` or
        ``IfNoneMatch``); returns its size in bytes. A failed condition raises
        S3's ClientError and leaves the upload ready for another attempt."""
        assert self._tail is not None, "seal() first"
        if self._upload_id is None:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=self.key,
                Body=self._tail,
                ContentType=self._content_type,
                Metadata=self._metadata,
                **condition,  # type: ignore[arg-type]
            )
        else:
            self.s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},  # type: ignore[typeddict-item]
                **condition,  # type: ignore[arg-type]
            )
            self._upload_id = None
        return self.size

    def abort(self) -> None:
        """Stop and remove every uploaded part. Never raises."""
        self._aborting = True
        self._stop()
        if self._upload_id is not None:
            try:
                # A newer job may have aborted it already (it took the claim over).
                if self._upload_id in self._open_uploads():
                    self.s3.abort_multipart_upload(
                        Bucket=self.bucket, Key=self.key, UploadId=self._upload_id
                    )
            except ClientError as error:
                if error_code(error) != "NoSuchUpload":
                    logger.exception("could not abort the upload of %s", self.key)
            except Exception:
                logger.exception("could not abort the upload of %s", self.key)
            self._upload_id = None

    def _open_uploads(self) -> set[str]:
        """The IDs of the multipart uploads in progress to this key."""
        response = self.s3.list_multipart_uploads(Bucket=self.bucket, Prefix=self.key)
        return {
            upload["UploadId"]
            for upload in response.get("Uploads", [])
            if upload.get("Key") == self.key
        }

    def _drain(self) -> None:
        self._stop()
        if self._error is not None:
            raise self._error

    def _stop(self) -> None:
        """Let the uploader finish what it was given, and end it."""
        if self._thread is not None:
            self._queue.put(_END)
            self._thread.join()
            self._thread = None

    def _upload(self) -> None:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if self._error is not None or self._aborting:
                continue  # keep draining so that writers never block
            try:
                assert isinstance(item, bytes)
                self._add(item)
            except BaseException as error:
                self._error = error

    def _add(self, data: bytes) -> None:
        if self._deflater is not None:
            data = self._deflater.compress(data)
        if data:
            self._pending.append(data)
            self._pending_bytes += len(data)
        if self._pending_bytes >= self._part_bytes:
            self._send_part(self._take(final=False))

    def _take(self, *, final: bool) -> bytes:
        if final and self._deflater is not None:
            self._pending.append(self._deflater.flush())
        data = b"".join(self._pending)
        self._pending = []
        self._pending_bytes = 0
        self.size += len(data)
        return data

    def _send_part(self, data: bytes) -> None:
        if self._upload_id is None:
            created = self.s3.create_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                ContentType=self._content_type,
                Metadata=self._metadata,
            )
            self._upload_id = created["UploadId"]
        number = len(self._parts) + 1
        response = self.s3.upload_part(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=data,
        )
        self._parts.append({"PartNumber": number, "ETag": response["ETag"]})


# -- the job ----------------------------------------------------------------------


@dataclass
class Counts:
    read: int = 0
    predicted: int = 0
    rejected: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "read": self.read,
            "predicted": self.predicted,
            "rejected": self.rejected,
        }


@dataclass(frozen=True)
class Source:
    """The input object as it was when the job read its ETag."""

    bucket: str
    key: str
    etag: str
    size: int


def process_upload(
    bucket: str,
    key: str,
    *,
    s3: S3Client,
    predictor: Predictor,
    settings: Settings,
    seconds_left: Callable[[], float],
    clock: Callable[[], datetime] = utc_now,
    observers: Observer | None = None,
) -> dict[str, Any] | None:
    """Process the file uploaded at ``key`` (already URL-decoded), once per ETag.

    ``seconds_left`` says how long the function may still run. Returns what
    happened (``action`` processed, skipped or lost, and the manifest); None when
    ``key`` is not a batch input or no longer exists. Errors that the file or the
    registry explain end in a failed manifest; other errors are recorded as a
    retryable failure and raised again, so that Lambda retries the event.
    ``observers`` get each processed file's Observation (metrics).
    """
    if not is_batch_input(key):
        logger.info(json.dumps({"event": "batch_ignored", "key": key}))
        return None
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if is_missing(error):
            logger.info(json.dumps({"event": "batch_gone", "key": key}))
            return None
        raise
    source = Source(bucket, key, head["ETag"], head["ContentLength"])
    job = BatchJob(
        source,
        s3=s3,
        predictor=predictor,
        settings=settings,
        seconds_left=seconds_left,
        clock=clock,
    )
    return observe_batch_file(observers, job.run())


class BatchJob:
    """One input file's job: claim, stream through the model, commit or fail."""

    def __init__(
        self,
        source: Source,
        *,
        s3: S3Client,
        predictor: Predictor,
        settings: Settings,
        seconds_left: Callable[[], float],
        clock: Callable[[], datetime],
    ) -> None:
        self.source = source
        self.s3 = s3
        self.predictor = predictor
        self.settings = settings
        self.seconds_left = seconds_left
        self.clock = clock
        self.run_id = uuid.uuid4().hex
        base = outputs_base(source.key)
        self.out_key = base + ".out"
        self.errors_key = base + ".errors.jsonl"
        self.ledger = Ledger(s3, source.bucket, base + ".manifest.json")
        self.counts = Counts()
        self.started_at = clock()
        self._started = time.monotonic()
        self.seconds_at_start = max(0.0, seconds_left())
        # The time kept for the last writes: a share of what the function had,
        # so that a short timeout (or chalice.test's 3 s) still leaves time to work.
        self.safety_seconds = min(
            settings.batch_safety_seconds,
            settings.batch_safety_fraction * self.seconds_at_start,
        )
        self.batch_key: BatchKey | None = None
        self.target: Target | None = None
        self.out: StreamingUpload | None = None
        self.errors: StreamingUpload | None = None
        self.stream: SourceStream | None = None
        self.output: dict[str, Any] | None = None
        self.errors_report: dict[str, Any] | None = None

    # -- the life of a job ------------------------------------------------------

    def run(self) -> dict[str, Any]:
        existing = self.ledger.read()
        reason = skip_reason(existing, self.source.etag, self.clock())
        if reason is not None:
            return self._skipped(reason, existing)
        expires = self.started_at + timedelta(seconds=self.seconds_at_start)
        claim = self._document(RUNNING)
        claim["claim"] = {"run_id": self.run_id, "expires_at": iso_timestamp(expires)}
        try:
            self.ledger.write(claim)
        except ClaimLostError:
            return self._skipped("another delivery claimed it first", None)
        self._log("batch_started")
        try:
            self._abort_abandoned_uploads()
            self._process()
        except ClaimLostError:
            self._discard()
            return self._lost()
        except (NotFoundError, SourceChangedError, BatchStartedTooLateError) as error:
            return self._fail(str(error), retryable=True)
        except TurnoutError as error:
            return self._fail(str(error), retryable=False)
        except BaseException:
            # A newer job that took the claim over aborts this one's uploads: what
            # fails next is a consequence, not an error of its own.
            if not self._holds_claim():
                self._discard()
                return self._lost()
            logger.exception("batch job %s failed on %s", self.run_id, self.source.key)
            self._fail(
                f"internal error in run {self.run_id}: see the function's log",
                retryable=True,
            )
            raise
        return self._finish()

    def _process(self) -> None:
        self.batch_key = batch_key = parse_key(self.source.key)
        target = self.predictor.resolve(
            batch_key.model,
            version=batch_key.version,
            alias=batch_key.alias,
            routing_key=batch_key.key,
        )
        # A whole file copied to a shadow would double the job's work: batch jobs
        # run the version that answers, and only that one.
        self.target = replace(target, shadow=None)
        pipeline = Pipeline(self, batch_key, self.target)
        self.check_time()
        self.stream = SourceStream(
            self.s3,
            self.source.bucket,
            self.source.key,
            self.source.etag,
            block_bytes=self.settings.batch_read_bytes,
            compressed=batch_key.compressed,
            check_time=self.check_time,
        )
        metadata = {"input-etag": self.source.etag.strip('"'), "run-id": self.run_id}
        self.out = StreamingUpload(
            self.s3,
            self.source.bucket,
            self.out_key,
            part_bytes=self.settings.batch_part_bytes,
            content_type=CONTENT_TYPES[batch_key.fmt],
            metadata=metadata,
            compress=batch_key.compressed,
        )
        self.errors = StreamingUpload(
            self.s3,
            self.source.bucket,
            self.errors_key,
            part_bytes=self.settings.batch_part_bytes,
            content_type=CONTENT_TYPES[tabular.JSONL],
            metadata=metadata,
        )
        pipeline.run(self.stream, self.out, self.errors)
        if self.errors.written:
            self.errors_report = {
                "key": self.errors_key,
                "rows": self.counts.rejected,
                "size": self._publish(self.errors),
            }
        if not self.counts.predicted and self.counts.rejected:
            raise BatchFileError(
                f"all {self.counts.rejected} rows were rejected: see the errors report"
            )
        size = self._publish(self.out)
        self.output = {
            "key": self.out_key,
            "size": size,
            "format": batch_key.fmt,
            "compression": "gzip" if batch_key.compressed else None,
            "columns": pipeline.columns(),
        }

    def check_time(self) -> None:
        """BatchTimeLimitError once the function is within its safety margin of its
        time limit; BatchStartedTooLateError when that is before any byte is read."""
        if self.seconds_left() > self.safety_seconds:
            return
        seconds = time.monotonic() - self._started
        done = self.stream.bytes_read if self.stream else 0
        if not done:
            raise BatchStartedTooLateError(seconds, self.seconds_at_start)
        raise BatchTimeLimitError(
            seconds, done, self.source.size, self.counts.predicted
        )

    # -- writes only the claim's holder can make ---------------------------------

    def _publish(self, upload: StreamingUpload) -> int:
        """Make ``upload`` visible, unless this job lost its claim; returns its
        size. The write is conditional on the object as it was when the claim was
        last checked, so a job superseded after its check cannot overwrite what
        the new holder wrote in between (ClaimLostError on its next check)."""
        upload.seal()
        while True:
            condition = self._condition_on(upload.key)
            self.ledger.check_held()
            try:
                return upload.publish(condition)
            except ClientError as error:
                if not is_precondition_failure(error):
                    raise

    def _delete(self, key: str) -> None:
        """Delete what an earlier upload left at ``key``, under the same rule."""
        while True:
            condition = self._condition_on(key)
            self.ledger.check_held()
            if "IfMatch" not in condition:
                return
            try:
                self.s3.delete_object(
                    Bucket=self.source.bucket, Key=key, IfMatch=condition["IfMatch"]
                )
                return
            except ClientError as error:
                if not (is_precondition_failure(error) or is_missing(error)):
                    raise

    def _condition_on(self, key: str) -> dict[str, str]:
        """``IfMatch`` the object's ETag, or ``IfNoneMatch`` when there is none."""
        try:
            etag = self.s3.head_object(Bucket=self.source.bucket, Key=key)["ETag"]
        except ClientError as error:
            if is_missing(error):
                return {"IfNoneMatch": "*"}
            raise
        return {"IfMatch": etag}

    def _holds_claim(self) -> bool:
        """Whether this job's manifest is still the last one written (True when S3
        cannot say: the error is then reported as this job's own)."""
        try:
            self.ledger.check_held()
        except ClaimLostError:
            return False
        except ClientError:
            return True
        return True

    # -- endings ------------------------------------------------------------------

    def _finish(self) -> dict[str, Any]:
        status = PARTIAL if self.counts.rejected else SUCCEEDED
        document = self._document(status)
        try:
            if self.errors_report is None:
                self._delete(self.errors_key)  # a report from an earlier upload
            self.ledger.write(document)
        except ClaimLostError:
            return self._lost()
        self._log("batch_finished", status=status)
        return {"action": "processed", "manifest": document}

    def _fail(self, error: str, *, retryable: bool) -> dict[str, Any]:
        self._discard()
        document = self._document(FAILED)
        document["error"] = error
        document["retryable"] = retryable
        try:
            self._delete(self.out_key)  # predictions of an earlier upload
            if self.errors_report is None:
                self._delete(self.errors_key)
            self.ledger.write(document)
        except ClaimLostError:
            return self._lost()
        self._log("batch_failed", level=logging.ERROR, error=error, retryable=retryable)
        return {"action": "processed", "manifest": document}

    def _discard(self) -> None:
        for upload in (self.out, self.errors):
            if upload is not None:
                upload.abort()

    def _lost(self) -> dict[str, Any]:
        """End quietly: a newer upload's job (superseded) or another delivery of
        this one (lost) holds the manifest now, and writes the outputs."""
        holder = self.ledger.read()
        newer = (holder or {}).get("input", {}).get("etag")
        if newer is not None and newer != self.source.etag:
            self._log("batch_superseded", by_etag=newer)
            return {"action": "superseded", "manifest": None}
        self._log("batch_claim_lost", level=logging.WARNING)
        return {"action": "lost", "manifest": None}

    def _skipped(self, reason: str, existing: dict[str, Any] | None) -> dict[str, Any]:
        logger.info(
            json.dumps(
                {"event": "batch_skipped", "key": self.source.key, "reason": reason}
            )
        )
        return {"action": "skipped", "reason": reason, "manifest": existing}

    def _abort_abandoned_uploads(self) -> None:
        """Abort multipart uploads of this job's outputs that a job which died
        midway left behind (none can be live: this job holds the claim)."""
        keys = {self.out_key, self.errors_key}
        response = self.s3.list_multipart_uploads(
            Bucket=self.source.bucket, Prefix=self.out_key.removesuffix(".out")
        )
        for upload in response.get("Uploads", []):
            if upload.get("Key") in keys:
                self.s3.abort_multipart_upload(
                    Bucket=self.source.bucket,
                    Key=upload["Key"],
                    UploadId=upload["UploadId"],
                )

    # -- records ----------------------------------------------------------------

    def _document(self, status: str) -> dict[str, Any]:
        batch_key = self.batch_key
        target = self.target
        alias: str | None
        version: int | None
        if target is not None:
            alias, version = target.alias, target.version
        elif batch_key is not None:
            alias, version = batch_key.alias, batch_key.version
            if alias is None and version is None:
                alias = self.predictor.default_alias
        else:
            alias, version = None, None
        finished = status != RUNNING
        document: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "status": status,
            "model": batch_key.model if batch_key else None,
            "alias": alias,
            "version": version,
            "rows": self.counts.to_dict(),
            "input": {
                "bucket": self.source.bucket,
                "key": self.source.key,
                "etag": self.source.etag,
                "size": self.source.size,
                "format": batch_key.fmt if batch_key else None,
                "compression": ("gzip" if batch_key and batch_key.compressed else None),
            },
            "output": self.output if finished else None,
            "errors": self.errors_report if finished else None,
            "run_id": self.run_id,
            "started_at": iso_timestamp(self.started_at),
            "finished_at": iso_timestamp(self.clock()) if finished else None,
            "seconds": round(time.monotonic() - self._started, 3) if finished else None,
        }
        return document

    def _log(self, event: str, *, level: int = logging.INFO, **fields: Any) -> None:
        record = {
            "event": event,
            "run_id": self.run_id,
            "key": self.source.key,
            "etag": self.source.etag,
            "version": self.target.version if self.target else None,
            "rows": self.counts.to_dict(),
            **fields,
        }
        logger.log(level, json.dumps(record))


class Pipeline:
    """The chunks of one file through the model: parse, predict, format, write."""

    def __init__(self, job: BatchJob, batch_key: BatchKey, target: Target) -> None:
        self.job = job
        self.counts = job.counts
        self.fmt = batch_key.fmt
        self.target = target
        manifest = target.manifest
        self.features = tabular.features_of(manifest)
        fields = tabular.output_fields(manifest)
        self.requested = list(dict.fromkeys(field.output for field in fields))
        self.open_widths = [
            name for name in tabular.open_widths(manifest) if name in self.requested
        ]
        self.table: tabular.CsvTable | tabular.JsonLinesTable | None = None
        if self.fmt == tabular.JSONL:
            keys = frozenset(field.key for field in fields)
            self.table = tabular.JsonLinesTable(self.features, keys)
        self.renderer: tabular.Renderer | None = None
        self.header = b""
        self.line = 1
        self.widths: dict[str, int] = {}
        self.looks_gzip = False

    def run(
        self, stream: SourceStream, out: StreamingUpload, errors: StreamingUpload
    ) -> None:
        """Read, parse, and predict and write, each on its own thread."""
        blocks = Prefetch(stream.blocks(), depth=2, name="turnout-batch-read")
        chunks = Prefetch(self._parse(blocks), depth=2, name="turnout-batch-parse")
        try:
            for parsed in chunks:
                self._predict(parsed, out, errors)
        finally:
            chunks.close()
            blocks.close()
        if self.renderer is None:
            self._start_output(out, {})

    def columns(self) -> list[str]:
        """The prediction columns (CSV) or keys (JSON) added to each row."""
        if self.renderer is None:
            return []
        if self.fmt == tabular.CSV:
            return self.renderer.csv_columns
        return [field.key for field in self.renderer.fields]

    def _parse(self, blocks: Iterable[bytes]) -> Iterator[tabular.ParsedChunk]:
        """The file's chunks of rows, parsed (the producer thread's work)."""
        csv = self.fmt == tabular.CSV
        splitter = tabular.RecordSplitter(
            self.job.settings.batch_rows_per_chunk,
            quoted=csv,
            header=csv,
            max_record_bytes=tabular.MAX_RECORD_BYTES,
        )
        row = 1
        first = True
        for block in blocks:
            if first:
                self.looks_gzip = block.startswith(_GZIP_MAGIC)
                first = False
            for chunk in splitter.feed(block):
                table = self._table(splitter)
                self._check_text(chunk)
                parsed = table.parse(chunk, row, self.line)
                row += parsed.rows
                self.line += parsed.lines
                yield parsed
        for chunk in splitter.close():
            table = self._table(splitter)
            self._check_text(chunk)
            yield table.parse(chunk, row, self.line)
        self._table(splitter)  # a header without rows still needs one

    def _table(
        self, splitter: tabular.RecordSplitter
    ) -> tabular.CsvTable | tabular.JsonLinesTable:
        if self.table is None:
            if splitter.header is None:
                raise BatchFileError(
                    "the file is empty: a CSV file starts with a header line"
                )
            self.header = splitter.header
            self._check_text(self.header)
            self.table = tabular.CsvTable.from_header(self.header, self.features)
            self.line = 1 + splitter.header_lines
        return self.table

    def _predict(
        self,
        parsed: tabular.ParsedChunk,
        out: StreamingUpload,
        errors: StreamingUpload,
    ) -> None:
        self.job.check_time()
        self.counts.read += parsed.rows
        if parsed.rejections:
            self.counts.rejected += len(parsed.rejections)
            errors.write(b"".join(item.to_json() for item in parsed.rejections))
        if not parsed.accepted:
            return
        prediction = self.job.predictor.run(
            self.target,
            parsed.inputs,
            outputs=self.requested,
            request_id=self.job.run_id,
        )
        outputs = prediction.outputs
        renderer = self.renderer or self._start_output(out, outputs)
        self._check_widths(outputs)
        out.write(
            tabular.assemble(parsed.heads, renderer.suffixes(outputs, parsed.kinds))
        )
        self.counts.predicted += parsed.accepted

    def _start_output(
        self, out: StreamingUpload, outputs: dict[str, Any]
    ) -> tabular.Renderer:
        """Fix the prediction columns (from the first prediction, for outputs whose
        width the signature leaves open) and write the CSV header."""
        self.widths = (
            {name: _row_width(outputs[name]) for name in self.open_widths}
            if outputs
            else {}
        )
        fields = tabular.output_fields(self.target.manifest, self.widths)
        header = self.table.header if isinstance(self.table, tabular.CsvTable) else ()
        self.renderer = tabular.make_renderer(fields, self.fmt, header)
        if self.fmt == tabular.CSV:
            out.write(self.renderer.csv_header(self.header))
        return self.renderer

    def _check_widths(self, outputs: dict[str, Any]) -> None:
        for name, width in self.widths.items():
            if _row_width(outputs[name]) != width:
                raise BatchFileError(
                    f"output {name!r} has {_row_width(outputs[name])} values per "
                    f"row here, {width} in the first rows: the columns cannot change"
                )

    def _check_text(self, data: bytes) -> None:
        if data.isascii():
            return
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as error:
            line = self.line + data.count(b"\n", 0, error.start)
            hint = " (it looks gzip-compressed: name it .gz)" if self.looks_gzip else ""
            raise BatchFileError(
                f"the file is not UTF-8: byte 0x{data[error.start]:02x} on line "
                f"{line} is not valid UTF-8{hint}"
            ) from None


def _row_width(array: Any) -> int:
    """Values per row of an output array."""
    return math.prod(int(dimension) for dimension in array.shape[1:])
