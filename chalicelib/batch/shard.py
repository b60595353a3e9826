"""One shard of a fanned-out job, and the assembly of the outputs by the last one.

A shard predicts its byte range into its own output and errors objects under the
run's prefix, then writes its done marker (``IfNoneMatch``: a redelivered message
finds it and recomputes nothing). Each shard then lists the markers: the shard
that sees all of them claims the assembly with a conditional write (only one can
create the claim; the same shard, redelivered after a crash, resumes it). The
assembler builds ``.out`` from the shards' outputs with multipart UploadPartCopy,
so they are not downloaded again (shards' outputs under S3's 5 MiB part minimum
are joined by reading them: ``shards.plan_parts``); the errors report is rewritten
with rows and lines numbered over the whole file. Then the final manifest, and
the run's intermediate objects are deleted.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from chalicelib import tabular
from chalicelib.batch import shards as shard_rules
from chalicelib.batch.deadline import Deadline
from chalicelib.batch.fanout import (
    RunEndedError,
    RunRecord,
    ShardTask,
    delete_parts,
    ended_record,
    list_keys,
    progress,
    read_header,
    read_range,
    summed_rows,
)
from chalicelib.batch.keys import (
    CONTENT_TYPES,
    RunKeys,
    ShardDone,
    outputs_base,
    parse_key,
    record_key,
)
from chalicelib.batch.pipeline import Pipeline
from chalicelib.batch.record import PARTIAL, SUCCEEDED, Counts, JobRecord
from chalicelib.batch.s3io import SourceStream, StreamingUpload, write_condition
from chalicelib.batch.shards import Piece, plan_parts, renumber_rejection
from chalicelib.config import Settings
from chalicelib.documents import JsonDocuments, is_precondition_failure
from chalicelib.errors import (
    BatchFileError,
    BatchStartedTooLateError,
    DocumentConflictError,
    NotFoundError,
    SourceChangedError,
    TurnoutError,
)
from chalicelib.observe import Observer, observe_batch_file
from chalicelib.predict import Predictor
from chalicelib.registry import iso_timestamp, utc_now

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger("turnout.batch")

# Errors a later attempt may not meet: the shard is retried (SQS redelivers it).
_TRANSIENT = (NotFoundError, BatchStartedTooLateError)
# Parts of .out sent at once: S3 copies each part at its own pace, so a thousand
# shards' outputs are assembled in a fraction of the time one after another.
_PARTS_IN_FLIGHT = 32


def process_shard(
    body: str,
    *,
    attempt: int,
    s3: S3Client,
    predictor: Predictor,
    settings: Settings,
    seconds_left: Callable[[], float],
    clock: Callable[[], datetime] = utc_now,
    observers: Observer | None = None,
) -> dict[str, Any]:
    """Predict the shard in an SQS message ``body``, delivered for the
    ``attempt``-th time; assemble the outputs when it is the last shard done.
    ``observers`` get the file's Observation when this shard ends it.

    Returns what happened (``action``: abandoned, shard_done, assembled or
    failed). A shard the file explains fails the job at once; any other error is
    raised for SQS to deliver the message again, and on the last attempt
    (``batch_shard_attempts``) it first fails the job naming the shard's range.
    """
    try:
        task = ShardTask.from_json(body)
    except ValueError as error:
        logger.error(
            json.dumps({"event": "batch_shard_unreadable", "error": str(error)})
        )
        return {"action": "abandoned"}
    result = ShardRun(task, s3, predictor, settings, seconds_left, clock).run(attempt)
    observe_batch_file(observers, result)
    return result


class ShardRun:
    """One delivery of one shard's message."""

    def __init__(
        self,
        task: ShardTask,
        s3: S3Client,
        predictor: Predictor,
        settings: Settings,
        seconds_left: Callable[[], float],
        clock: Callable[[], datetime],
    ) -> None:
        self.task = task
        self.s3 = s3
        self.predictor = predictor
        self.settings = settings
        self.clock = clock
        self.deadline = Deadline(seconds_left, settings)
        self.keys = RunKeys.of(task.key, task.run_id)
        self.base = outputs_base(task.key)
        self.record = RunRecord(s3, task.bucket, record_key(task.key), task, clock)
        self.documents = JsonDocuments(s3, task.bucket)
        # What the pipeline reads from its host (chalicelib.batch.pipeline.Host).
        self.run_id = task.run_id
        self.counts = Counts()
        self.stream: SourceStream | None = None

    # -- the life of a delivery ----------------------------------------------------

    def run(self, attempt: int) -> dict[str, Any]:
        try:
            return self._run(attempt)
        except RunEndedError:
            return self._abandon()

    def _run(self, attempt: int) -> dict[str, Any]:
        if self.record.current() is None:
            return self._abandon()
        if self._find_done() is None:
            try:
                self._predict()
            except (SourceChangedError, RunEndedError):
                return self._abandon()
            except TurnoutError as error:
                if not isinstance(error, _TRANSIENT):
                    return self._fail(f"{self._name()}: {error}", retryable=False)
                self._give_up_after(attempt, error)
                raise
            except BaseException as error:
                self._give_up_after(attempt, error)
                raise
        markers = self._list_done()
        if len(markers) < self.task.count:
            self.record.report_progress(
                markers,
                every=self.settings.batch_progress_seconds,
                lease=self.deadline.seconds_at_start
                * self.settings.batch_shard_attempts,
            )
            self._log("batch_shard_done", shards_done=len(markers))
            return {"action": "shard_done", "index": self.task.index}
        if not self._claim_assembly():
            return {"action": "shard_done", "index": self.task.index}
        try:
            return self._assemble(markers)
        except RunEndedError:
            raise
        except TurnoutError as error:
            return self._fail(str(error), retryable=False)
        except BaseException as error:
            self._give_up_after(attempt, error)  # its next delivery resumes it
            raise

    def check_time(self) -> None:
        """Stop the shard a safety margin before the function's time limit."""
        done = self.stream.bytes_read if self.stream else 0
        size = self.task.end - self.task.start
        self.deadline.check(done, size, self.counts.predicted)

    def report_progress(self) -> None:
        """Nothing within a shard: its done marker is its progress."""

    def _predict(self) -> ShardDone:
        """Predict the shard's rows into its outputs; its done marker."""
        task = self.task
        batch_key = parse_key(task.key)
        target = replace(
            self.predictor.resolve(batch_key.model, version=task.version),
            shadow=None,
        )
        header = None
        if task.index and batch_key.fmt == tabular.CSV:
            header, _ = read_header(self._read, task.data_start)
        last = task.index == task.count - 1
        pipeline = Pipeline(
            self, batch_key, target, at_start=not task.index, at_end=last, header=header
        )
        self.stream = SourceStream(
            self.s3,
            task.bucket,
            task.key,
            task.etag,
            block_bytes=self.settings.batch_read_bytes,
            compressed=False,
            check_time=self.check_time,
            start=task.start,
            end=task.end,
        )
        out = self._upload(self.keys.out(task.index), CONTENT_TYPES[batch_key.fmt])
        errors = self._upload(
            self.keys.errors(task.index), CONTENT_TYPES[tabular.JSONL]
        )
        try:
            pipeline.run(self.stream, out, errors)
            out.seal()
            out.publish({})
            if errors.written:
                errors.seal()
                errors.publish({})
        except BaseException:
            out.abort()
            errors.abort()
            raise
        marker = ShardDone(
            task.index,
            task.end - task.start,
            self.counts.read,
            self.counts.predicted,
            self.counts.rejected,
        )
        details = {
            **asdict(marker),
            "start": task.start,
            "end": task.end,
            "lines": pipeline.data_lines,
            "seconds": round(self.deadline.elapsed(), 3),
            "columns": pipeline.columns(),
            "out_size": out.size,
            "errors_size": errors.size,
        }
        # Another delivery of this message may have finished it first: the same.
        with contextlib.suppress(DocumentConflictError):
            self.documents.write(self.keys.done(marker), details, etag=None)
        self._log("batch_shard_predicted", seconds=details["seconds"])
        return marker

    def _read(self, start: int, end: int) -> bytes:
        task = self.task
        return read_range(self.s3, task.bucket, task.key, task.etag, start, end)

    def _upload(self, key: str, content_type: str) -> StreamingUpload:
        return StreamingUpload(
            self.s3,
            self.task.bucket,
            key,
            part_bytes=self.settings.batch_part_bytes,
            content_type=content_type,
            metadata={"run-id": self.task.run_id},
        )

    def _find_done(self) -> ShardDone | None:
        for key in list_keys(
            self.s3, self.task.bucket, self.keys.done_of(self.task.index)
        ):
            return self.keys.parse_done(key)
        return None

    def _list_done(self) -> list[ShardDone]:
        return [
            self.keys.parse_done(key)
            for key in list_keys(self.s3, self.task.bucket, self.keys.done_prefix)
        ]

    def _claim_assembly(self) -> bool:
        """Whether this shard assembles: it created the claim, or created it on an
        earlier delivery of its message (and died before the end)."""
        claim = {"shard": self.task.index, "at": iso_timestamp(self.clock())}
        try:
            self.documents.write(self.keys.assembler, claim, etag=None)
        except DocumentConflictError:
            found = self.documents.read(self.keys.assembler)
            return found is not None and found[0].get("shard") == self.task.index
        return True

    # -- assembly -------------------------------------------------------------------

    def _assemble(self, markers: list[ShardDone]) -> dict[str, Any]:
        task = self.task
        details = [
            self.documents.read(self.keys.done(marker))
            for marker in sorted(markers, key=lambda m: m.index)
        ]
        shards: list[dict[str, Any]] = []
        rows_before = lines_before = 0
        columns: list[str] | None = None
        for found in details:
            assert found is not None, "a done marker vanished during the assembly"
            shard = found[0]
            if shard["predicted"] and shard["columns"] != (columns or shard["columns"]):
                raise BatchFileError(
                    f"shard {shard['index'] + 1} has the prediction columns "
                    f"{shard['columns']}, the shards before it {columns}: the columns "
                    "cannot change"
                )
            if shard["predicted"] or columns is None:
                columns = shard["columns"]
            shard["rows_before"], shard["lines_before"] = rows_before, lines_before
            rows_before += shard["read"]
            lines_before += shard["lines"]
            shards.append(shard)
        batch_key = parse_key(task.key)
        rows = summed_rows(markers)
        errors_report = None
        if rows["rejected"]:
            errors_report = {
                "key": self.base + ".errors.jsonl",
                "rows": rows["rejected"],
                "size": self._assemble_errors(shards),
            }
        if not rows["predicted"] and rows["rejected"]:
            return self._fail(
                f"all {rows['rejected']} rows were rejected: see the errors report",
                retryable=False,
                keep_errors=True,
            )
        size = self._assemble_out(shards, CONTENT_TYPES[batch_key.fmt])
        now = self.clock()
        output = {
            "key": self.base + ".out",
            "size": size,
            "format": batch_key.fmt,
            "compression": None,
            "columns": columns or [],
        }

        def finished(document: JobRecord) -> JobRecord:
            status = PARTIAL if rows["rejected"] else SUCCEEDED
            ended = ended_record(document, status, now)
            ended["rows"] = rows
            ended["output"] = output
            ended["errors"] = errors_report
            ended["progress"] = progress(markers, document["progress"], now)
            ended["shards"] = [_shard_summary(shard) for shard in shards]
            return ended

        if errors_report is None:
            self._delete_output(self.base + ".errors.jsonl")
        written = self.record.update(finished)
        if written is None:
            return self._abandon()
        delete_parts(self.s3, task.bucket, self.keys.prefix)
        self._log("batch_finished", status=written["status"], shards=len(shards))
        return {"action": "assembled", "index": task.index, "manifest": written}

    def _assemble_out(self, shards: list[dict[str, Any]], content_type: str) -> int:
        """``.out`` from the shards' outputs, in order; its size."""
        bucket, key = self.task.bucket, self.base + ".out"
        sizes = [shard["out_size"] for shard in shards]
        metadata = {"input-etag": self.task.etag.strip('"'), "run-id": self.run_id}
        if not sum(sizes):
            self._write_output(
                key,
                lambda condition: self.s3.put_object(
                    Bucket=bucket,
                    Key=key,
                    Body=b"",
                    ContentType=content_type,
                    Metadata=metadata,
                    **condition,  # type: ignore[arg-type]
                ),
            )
            return 0
        upload_id = self.s3.create_multipart_upload(
            Bucket=bucket, Key=key, ContentType=content_type, Metadata=metadata
        )["UploadId"]
        try:
            plan = plan_parts(sizes, min_part=shard_rules.MIN_PART_BYTES)
            with ThreadPoolExecutor(_PARTS_IN_FLIGHT) as pool:
                etags = pool.map(
                    lambda number, part: self._part(
                        key, upload_id, number, part, shards
                    ),
                    range(1, len(plan) + 1),
                    plan,
                )
                parts = [
                    {"PartNumber": number, "ETag": etag}
                    for number, etag in enumerate(etags, start=1)
                ]
            self._write_output(
                key,
                lambda condition: self.s3.complete_multipart_upload(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                    **condition,  # type: ignore[arg-type]
                ),
            )
        except BaseException:
            self.s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise
        return sum(sizes)

    def _part(
        self,
        key: str,
        upload_id: str,
        number: int,
        part: list[Piece],
        shards: list[dict[str, Any]],
    ) -> str:
        """Send part ``number``: copied in S3 when it is one shard's output (or a
        range of it), else read and uploaded (small outputs joined); its ETag."""
        bucket = self.task.bucket
        if len(part) == 1:
            piece = part[0]
            copied = self.s3.upload_part_copy(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                CopySource={"Bucket": bucket, "Key": self._out_of(shards, piece)},
                CopySourceRange=f"bytes={piece.start}-{piece.end - 1}",
            )
            return copied["CopyPartResult"]["ETag"]
        body = b"".join(
            self.s3.get_object(
                Bucket=bucket,
                Key=self._out_of(shards, piece),
                Range=f"bytes={piece.start}-{piece.end - 1}",
            )["Body"].read()
            for piece in part
        )
        sent = self.s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
        )
        return sent["ETag"]

    def _out_of(self, shards: list[dict[str, Any]], piece: Piece) -> str:
        return self.keys.out(shards[piece.source]["index"])

    def _assemble_errors(self, shards: list[dict[str, Any]]) -> int:
        """The errors report from the shards' reports, numbered over the file; its
        size."""
        key = self.base + ".errors.jsonl"
        upload = self._upload(key, CONTENT_TYPES[tabular.JSONL])
        try:
            for shard in shards:
                if not shard["rejected"]:
                    continue
                body = self.s3.get_object(
                    Bucket=self.task.bucket, Key=self.keys.errors(shard["index"])
                )["Body"]
                for line in body.iter_lines(keepends=True):
                    upload.write(
                        renumber_rejection(
                            line, shard["rows_before"], shard["lines_before"]
                        )
                    )
            upload.seal()
            self._write_output(key, upload.publish)
        except BaseException:
            upload.abort()
            raise
        return upload.size

    def _write_output(
        self, key: str, write: Callable[[dict[str, str]], object]
    ) -> None:
        """Write (or delete) an output of the file, conditional on the object as it
        was just before this run was found still running: a re-upload's job that
        wrote it in between makes the condition fail, and the next check end this
        run (RunEndedError)."""
        while True:
            condition = write_condition(self.s3, self.task.bucket, key)
            if self.record.current() is None:
                raise RunEndedError(self.task.run_id)
            try:
                write(condition)
                return
            except ClientError as error:
                if not is_precondition_failure(error):
                    raise

    def _delete_output(self, key: str) -> None:
        """Delete what an earlier upload left at ``key``, under the same rule."""

        def delete(condition: dict[str, str]) -> None:
            if "IfMatch" in condition:
                self.s3.delete_object(
                    Bucket=self.task.bucket, Key=key, IfMatch=condition["IfMatch"]
                )

        self._write_output(key, delete)

    # -- endings --------------------------------------------------------------------

    def _give_up_after(self, attempt: int, error: BaseException) -> None:
        """On the last attempt, fail the job naming the shard: SQS then moves its
        message to the dead-letter queue. Earlier, SQS delivers it again."""
        self._log(
            "batch_shard_error",
            level=logging.ERROR,
            attempt=attempt,
            error=f"{type(error).__name__}: {error}",
        )
        if attempt < self.settings.batch_shard_attempts:
            return
        task = self.task
        before = [marker for marker in self._list_done() if marker.index < task.index]
        rows = ""
        if len(before) == task.index:
            rows = f", rows from {sum(marker.read for marker in before) + 1}"
        self._fail(
            f"{self._name()} (bytes {task.start}-{task.end}{rows}) failed "
            f"{attempt} times, the last with: {error}; its message is in the "
            "dead-letter queue",
            retryable=True,
        )

    def _fail(
        self, error: str, *, retryable: bool, keep_errors: bool = False
    ) -> dict[str, Any]:
        """End the job as failed (outputs of an earlier upload removed, the run's
        intermediate objects deleted); abandoned when it had already ended."""
        try:
            self._delete_output(self.base + ".out")
            if not keep_errors:
                self._delete_output(self.base + ".errors.jsonl")
        except RunEndedError:
            return self._abandon()
        written = self.record.fail(error, retryable=retryable)
        if written is None:
            return self._abandon()
        delete_parts(self.s3, self.task.bucket, self.keys.prefix)
        self._log("batch_failed", level=logging.ERROR, error=error, retryable=retryable)
        return {"action": "failed", "manifest": written}

    def _abandon(self) -> dict[str, Any]:
        """The run is over (superseded by a re-upload, failed, or finished): delete
        what is left of it, compute nothing."""
        delete_parts(self.s3, self.task.bucket, self.keys.prefix)
        self._log("batch_shard_abandoned")
        return {"action": "abandoned", "index": self.task.index}

    def _name(self) -> str:
        return f"shard {self.task.index + 1} of {self.task.count}"

    def _log(self, event: str, *, level: int = logging.INFO, **fields: Any) -> None:
        record = {
            "event": event,
            "run_id": self.run_id,
            "key": self.task.key,
            "shard": self.task.index,
            "rows": self.counts.to_dict(),
            **fields,
        }
        logger.log(level, json.dumps(record))


def _shard_summary(shard: dict[str, Any]) -> dict[str, Any]:
    """A shard as the final manifest keeps it: bytes, rows (over the file),
    counts and seconds."""
    first = shard["rows_before"] + 1
    return {
        "index": shard["index"],
        "bytes": [shard["start"], shard["end"]],
        "rows": [first, first + shard["read"] - 1],
        "counts": {key: shard[key] for key in ("read", "predicted", "rejected")},
        "seconds": shard["seconds"],
    }
