"""The batch job: stream a file uploaded under ``incoming/`` through the model and
write its predictions, job record and error report under ``outgoing/``.

The job record is the job's lease (``record``). The file is streamed (``s3io``): a
reader thread fetches and decompresses blocks, the caller's thread parses,
predicts and formats chunks of rows (``pipeline``), and an uploader thread sends
output parts as they fill. ``.out`` becomes visible only when its multipart upload
completes, after the last row; a failure aborts the upload instead. Every write to
an output is conditional on the object as the job last saw it, just after checking
its claim: a job superseded in between fails the condition and ends quietly.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from chalicelib.batch.deadline import Deadline
from chalicelib.batch.fanout.messages import ShardQueue, shard_tasks
from chalicelib.batch.fanout.plan import Shard, plan_shards, wants_fan_out
from chalicelib.batch.keys import (
    CONTENT_TYPES,
    BatchKey,
    RunKeys,
    errors_key,
    is_batch_input,
    out_key,
    parse_key,
    parts_prefix,
    record_key,
)
from chalicelib.batch.pipeline import Pipeline
from chalicelib.batch.record import (
    FAILED,
    PARTIAL,
    RECORD_FORMAT,
    RUNNING,
    SUCCEEDED,
    Claim,
    ClaimLostError,
    Counts,
    JobRecord,
    Ledger,
    skip_reason,
)
from chalicelib.batch.runtime import BatchRuntime
from chalicelib.batch.s3io import (
    SourceStream,
    StreamingUpload,
    delete_prefix,
    read_range,
    write_condition,
)
from chalicelib.batch.tables.formats import JSONL
from chalicelib.clock import iso_timestamp
from chalicelib.documents import is_missing, is_precondition_failure
from chalicelib.errors import (
    BatchFileError,
    BatchStartedTooLateError,
    NotFoundError,
    SourceChangedError,
    TurnoutError,
)
from chalicelib.observe import observe_batch_file
from chalicelib.predictor import Target

if TYPE_CHECKING:
    pass

logger = logging.getLogger("turnout.batch")


@dataclass(frozen=True)
class Source:
    """The input object as it was when the job read its ETag."""

    bucket: str
    key: str
    etag: str
    size: int


def process_upload(
    bucket: str, key: str, runtime: BatchRuntime
) -> dict[str, Any] | None:
    """Process the file uploaded at ``key`` (already URL-decoded), once per ETag.

    ``runtime.seconds_left`` says how long the function may still run. A file
    larger than ``batch_shard_bytes`` is fanned out: its shards go to
    ``runtime.shard_queue`` and the shard function predicts them
    (``chalicelib.batch.fanout.shard``). Returns what happened (``action``
    processed, fanned_out, skipped or lost, and the job record under
    ``manifest``, the key the handler's callers read); None when ``key`` is not a
    batch input or no longer exists. Errors that the file or the registry explain
    end in a failed job record; other errors are recorded as a retryable failure
    and raised again, so that Lambda retries the event. ``runtime.observers`` get
    each file processed here as one Observation (metrics); a fanned-out file is
    observed by the shard that assembles it.
    """
    if not is_batch_input(key):
        logger.info(json.dumps({"event": "batch_ignored", "key": key}))
        return None
    try:
        head = runtime.s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if is_missing(error):
            logger.info(json.dumps({"event": "batch_gone", "key": key}))
            return None
        raise
    source = Source(bucket, key, head["ETag"], head["ContentLength"])
    return observe_batch_file(runtime.observers, BatchJob(source, runtime).run())


class BatchJob:
    """One input file's job: claim, stream through the model, commit or fail."""

    def __init__(self, source: Source, runtime: BatchRuntime) -> None:
        s3, settings, clock = runtime.s3, runtime.settings, runtime.clock
        self.source = source
        self.shards = runtime.shard_queue
        self.s3 = s3
        self.predictor = runtime.predictor
        self.settings = settings
        self.clock = clock
        self.run_id = uuid.uuid4().hex
        self.out_key = out_key(source.key)
        self.errors_key = errors_key(source.key)
        self.ledger = Ledger(s3, source.bucket, record_key(source.key))
        self.counts = Counts()
        self.started_at = clock()
        self.deadline = Deadline(runtime.seconds_left, settings)
        self.batch_key: BatchKey | None = None
        self.target: Target | None = None
        self.out: StreamingUpload | None = None
        self.errors: StreamingUpload | None = None
        self.stream: SourceStream | None = None
        self.output: dict[str, Any] | None = None
        self.errors_report: dict[str, Any] | None = None
        self.fanned_out: JobRecord | None = None
        self._progress_at = self.started_at
        self._claim: Claim = {"run_id": self.run_id, "expires_at": ""}

    # -- the life of a job ------------------------------------------------------

    def run(self) -> dict[str, Any]:
        existing = self.ledger.read()
        reason = skip_reason(existing, self.source.etag, self.clock())
        if reason is not None:
            return self._skipped(reason, existing)
        expires = self.started_at + timedelta(seconds=self.deadline.seconds_at_start)
        claim = self._record(RUNNING)
        self._claim = {"run_id": self.run_id, "expires_at": iso_timestamp(expires)}
        claim["claim"] = self._claim
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
        if self.fanned_out is not None:
            self._log("batch_fanned_out", shards=self.fanned_out["progress"]["shards"])
            return {"action": "fanned_out", "manifest": self.fanned_out}
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
        if self.shards is not None and wants_fan_out(
            self.source.size, batch_key, self.settings
        ):
            shards, data_start = plan_shards(
                self._read, self.source.size, batch_key, self.settings
            )
            if len(shards) > 1:
                self._fan_out(self.shards, shards, data_start)
                return
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
            content_type=CONTENT_TYPES[JSONL],
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

    def _read(self, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` of the input, while it is still this upload."""
        source = self.source
        return read_range(
            self.s3, source.bucket, source.key, start, end, etag=source.etag
        )

    def _fan_out(self, queue: ShardQueue, shards: list[Shard], data_start: int) -> None:
        """Hand the file's shards to the shard function: the running job record
        with the run's plan first (shards find it), then one message per shard."""
        source, target = self.source, self.target
        assert target is not None
        run = RunKeys.of(source.key, self.run_id)
        delete_prefix(self.s3, source.bucket, parts_prefix(source.key), keep=run.prefix)
        now = self.clock()
        lease = self.deadline.seconds_at_start * self.settings.batch_shard_attempts
        document = self._record(RUNNING)
        document["claim"] = {
            "run_id": self.run_id,
            "expires_at": iso_timestamp(now + timedelta(seconds=lease)),
        }
        document["progress"] = {
            "shards_done": 0,
            "shards": len(shards),
            "bytes_done": 0,
            "bytes": source.size,
            "rows_done": 0,
            "updated_at": iso_timestamp(now),
        }
        self.ledger.write(document)
        tasks = shard_tasks(
            source.bucket,
            source.key,
            source.etag,
            self.run_id,
            target.version,
            shards,
            data_start,
        )
        queue.send([task.to_json() for task in tasks])
        self.fanned_out = document

    def report_progress(self) -> None:
        """Write the running job record with the bytes and rows done, at most every
        ``batch_progress_seconds`` (ClaimLostError when another job holds it)."""
        now = self.clock()
        every = timedelta(seconds=self.settings.batch_progress_seconds)
        if now - self._progress_at < every:
            return
        self._progress_at = now
        document = self._record(RUNNING)
        document["claim"] = self._claim
        document["progress"] = {
            "shards_done": 0,
            "shards": 1,
            "bytes_done": self.stream.bytes_read if self.stream else 0,
            "bytes": self.source.size,
            "rows_done": self.counts.read,
            "updated_at": iso_timestamp(now),
        }
        self.ledger.write(document)

    def check_time(self) -> None:
        """Stop the job a safety margin before the function's time limit."""
        done = self.stream.bytes_read if self.stream else 0
        self.deadline.check(done, self.source.size, self.counts.predicted)

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
        return write_condition(self.s3, self.source.bucket, key)

    def _holds_claim(self) -> bool:
        """Whether this job's record is still the last one written (True when S3
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
        document = self._record(status)
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
        document = self._record(FAILED)
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
        this one (lost) holds the job record now, and writes the outputs."""
        holder = self.ledger.read()
        newer = (holder or {}).get("input", {}).get("etag")
        if newer is not None and newer != self.source.etag:
            self._log("batch_superseded", by_etag=newer)
            return {"action": "superseded", "manifest": None}
        self._log("batch_claim_lost", level=logging.WARNING)
        return {"action": "lost", "manifest": None}

    def _skipped(self, reason: str, existing: JobRecord | None) -> dict[str, Any]:
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

    def _record(self, status: str) -> JobRecord:
        """The job record as this job would write it now, with ``status``."""
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
        document: JobRecord = {
            "format": RECORD_FORMAT,
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
            "seconds": round(self.deadline.elapsed(), 3) if finished else None,
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
