"""One shard of a fanned-out job: one delivery of its message.

A shard predicts its byte range into its own output and errors objects under the
run's prefix, then writes its done marker (``IfNoneMatch``: a redelivered message
finds it and recomputes nothing). Each shard then lists the markers: the shard
that sees all of them claims the assembly with a conditional write (only one can
create the claim; the same shard, redelivered after a crash, resumes it) and
assembles the outputs (``assembly``). Every change a shard makes to the job
record is a compare-and-swap that holds only while the record is still this
run's running one, so a re-upload (a new run) or a failure ends every shard of
the old run quietly.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.batch.deadline import Deadline
from chalicelib.batch.fanout.assembly import Assembly
from chalicelib.batch.fanout.messages import ShardTask
from chalicelib.batch.fanout.plan import progress, read_header, summed_rows
from chalicelib.batch.keys import (
    CONTENT_TYPES,
    RunKeys,
    ShardDone,
    errors_key,
    out_key,
    outputs_base,
    parse_key,
    record_key,
)
from chalicelib.batch.pipeline import Pipeline
from chalicelib.batch.record import (
    FAILED,
    RUNNING,
    Counts,
    JobRecord,
    Ledger,
    RunEndedError,
    ended_record,
)
from chalicelib.batch.runtime import BatchRuntime
from chalicelib.batch.s3io import (
    SourceStream,
    StreamingUpload,
    delete_prefix,
    list_keys,
    read_range,
    write_condition,
)
from chalicelib.batch.tables.formats import CSV, JSONL
from chalicelib.clock import iso_timestamp
from chalicelib.documents import JsonDocuments, is_precondition_failure
from chalicelib.errors import (
    BatchStartedTooLateError,
    DocumentConflictError,
    NotFoundError,
    SourceChangedError,
    TurnoutError,
)
from chalicelib.observe import observe_batch_file

logger = logging.getLogger("turnout.batch")

# Errors a later attempt may not meet: the shard is retried (SQS redelivers it).
_TRANSIENT = (NotFoundError, BatchStartedTooLateError)


def process_shard(body: str, runtime: BatchRuntime, *, attempt: int) -> dict[str, Any]:
    """Predict the shard in an SQS message ``body``, delivered for the
    ``attempt``-th time; assemble the outputs when it is the last shard done.
    The runtime's observers get the file's Observation when this shard ends it.

    Returns what happened (``action``: abandoned, shard_done, assembled or
    failed, and the job record under ``manifest`` when this shard ended the job).
    A shard the file explains fails the job at once; any other error is raised
    for SQS to deliver the message again, and on the last attempt
    (``batch_shard_attempts``) it first fails the job naming the shard's range.
    """
    try:
        task = ShardTask.from_json(body)
    except ValueError as error:
        logger.error(
            json.dumps({"event": "batch_shard_unreadable", "error": str(error)})
        )
        return {"action": "abandoned"}
    result = ShardRun(task, runtime).run(attempt)
    observe_batch_file(runtime.observers, result)
    return result


class ShardRun:
    """One delivery of one shard's message."""

    def __init__(self, task: ShardTask, runtime: BatchRuntime) -> None:
        self.task = task
        self.s3 = runtime.s3
        self.predictor = runtime.predictor
        self.settings = runtime.settings
        self.clock = runtime.clock
        self.deadline = Deadline(runtime.seconds_left, runtime.settings)
        self.keys = RunKeys.of(task.key, task.run_id)
        self.base = outputs_base(task.key)
        self.ledger = Ledger(runtime.s3, task.bucket, record_key(task.key))
        self.documents = JsonDocuments(runtime.s3, task.bucket)
        # What the pipeline reads from its host (chalicelib.batch.pipeline.Host).
        self.run_id = task.run_id
        self.counts = Counts()
        self.stream: SourceStream | None = None

    # -- the life of a delivery ----------------------------------------------------

    def run(self, attempt: int) -> dict[str, Any]:
        try:
            return self._run(attempt)
        except RunEndedError:
            return self.abandon()

    def _run(self, attempt: int) -> dict[str, Any]:
        if self.current() is None:
            return self.abandon()
        if self._find_done() is None:
            try:
                self._predict()
            except (SourceChangedError, RunEndedError):
                return self.abandon()
            except TurnoutError as error:
                if not isinstance(error, _TRANSIENT):
                    return self.fail(f"{self._name()}: {error}", retryable=False)
                self._give_up_after(attempt, error)
                raise
            except BaseException as error:
                self._give_up_after(attempt, error)
                raise
        markers = self._list_done()
        if len(markers) < self.task.count:
            self._write_progress(markers)
            self.log("batch_shard_done", shards_done=len(markers))
            return {"action": "shard_done", "index": self.task.index}
        if not self._claim_assembly():
            return {"action": "shard_done", "index": self.task.index}
        try:
            return Assembly(self).run(markers)
        except RunEndedError:
            raise
        except TurnoutError as error:
            return self.fail(str(error), retryable=False)
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
        if task.index and batch_key.fmt == CSV:
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
        out = self.upload(self.keys.out(task.index), CONTENT_TYPES[batch_key.fmt])
        errors = self.upload(self.keys.errors(task.index), CONTENT_TYPES[JSONL])
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
        self.log("batch_shard_predicted", seconds=details["seconds"])
        return marker

    def _read(self, start: int, end: int) -> bytes:
        task = self.task
        return read_range(self.s3, task.bucket, task.key, start, end, etag=task.etag)

    def upload(self, key: str, content_type: str) -> StreamingUpload:
        """An upload of one of the run's objects (a shard's output or report, or
        the assembled errors report)."""
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

    # -- the job record, while it is this run's -------------------------------------

    def _is_this_run(self, document: JobRecord) -> bool:
        """Whether the record is still this run's running one."""
        return (
            document.get("status") == RUNNING
            and document.get("run_id") == self.task.run_id
            and document.get("input", {}).get("etag") == self.task.etag
        )

    def current(self) -> JobRecord | None:
        """The job record if it is still this run's running one, else None."""
        return self.ledger.read_while(self._is_this_run)

    def update(
        self, change: Callable[[JobRecord], JobRecord | None]
    ) -> JobRecord | None:
        """Apply ``change`` to the job record (None from it: leave it as it is)
        until the write wins; the record written, or None when the run is over."""
        return self.ledger.update_while(self._is_this_run, change)

    def _write_progress(self, done: list[ShardDone]) -> None:
        """Write how far the run is, unless that was written less than
        ``batch_progress_seconds`` ago; each write extends the claim by the
        shard's time times its attempts."""
        now = self.clock()
        every = self.settings.batch_progress_seconds
        lease = self.deadline.seconds_at_start * self.settings.batch_shard_attempts

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

        self.update(progressed)

    # -- the file's outputs, while the run holds ----------------------------------

    def write_output(self, key: str, write: Callable[[dict[str, str]], object]) -> None:
        """Write (or delete) an output of the file, conditional on the object as it
        was just before this run was found still running: a re-upload's job that
        wrote it in between makes the condition fail, and the next check end this
        run (RunEndedError)."""
        while True:
            condition = write_condition(self.s3, self.task.bucket, key)
            if self.current() is None:
                raise RunEndedError(self.task.run_id)
            try:
                write(condition)
                return
            except ClientError as error:
                if not is_precondition_failure(error):
                    raise

    def delete_output(self, key: str) -> None:
        """Delete what an earlier upload left at ``key``, under the same rule."""

        def delete(condition: dict[str, str]) -> None:
            if "IfMatch" in condition:
                self.s3.delete_object(
                    Bucket=self.task.bucket, Key=key, IfMatch=condition["IfMatch"]
                )

        self.write_output(key, delete)

    # -- endings --------------------------------------------------------------------

    def _give_up_after(self, attempt: int, error: BaseException) -> None:
        """On the last attempt, fail the job naming the shard: SQS then moves its
        message to the dead-letter queue. Earlier, SQS delivers it again."""
        self.log(
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
        self.fail(
            f"{self._name()} (bytes {task.start}-{task.end}{rows}) failed "
            f"{attempt} times, the last with: {error}; its message is in the "
            "dead-letter queue",
            retryable=True,
        )

    def fail(
        self, error: str, *, retryable: bool, keep_errors: bool = False
    ) -> dict[str, Any]:
        """End the job as failed (outputs of an earlier upload removed, the run's
        intermediate objects deleted); abandoned when it had already ended."""
        try:
            self.delete_output(out_key(self.task.key))
            if not keep_errors:
                self.delete_output(errors_key(self.task.key))
        except RunEndedError:
            return self.abandon()
        now = self.clock()

        def failed(document: JobRecord) -> JobRecord:
            ended = ended_record(document, FAILED, now)
            ended["error"] = error
            ended["retryable"] = retryable
            return ended

        written = self.update(failed)
        if written is None:
            return self.abandon()
        delete_prefix(self.s3, self.task.bucket, self.keys.prefix)
        self.log("batch_failed", level=logging.ERROR, error=error, retryable=retryable)
        return {"action": "failed", "manifest": written}

    def abandon(self) -> dict[str, Any]:
        """The run is over (superseded by a re-upload, failed, or finished): delete
        what is left of it, compute nothing."""
        delete_prefix(self.s3, self.task.bucket, self.keys.prefix)
        self.log("batch_shard_abandoned")
        return {"action": "abandoned", "index": self.task.index}

    def _name(self) -> str:
        return f"shard {self.task.index + 1} of {self.task.count}"

    def log(self, event: str, *, level: int = logging.INFO, **fields: Any) -> None:
        record = {
            "event": event,
            "run_id": self.run_id,
            "key": self.task.key,
            "shard": self.task.index,
            "rows": self.counts.to_dict(),
            **fields,
        }
        logger.log(level, json.dumps(record))
