"""The assembly of a fanned-out job's outputs, by the shard that finished last.

The assembler builds ``.out`` from the shards' outputs with multipart
UploadPartCopy, so they are not downloaded again (shards' outputs under S3's
5 MiB part minimum are joined by reading them: ``plan.plan_parts``); the errors
report is rewritten with rows and lines numbered over the whole file. Then the
final job record is written, and the run's intermediate objects are deleted.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from chalicelib.batch.fanout import plan
from chalicelib.batch.fanout.plan import (
    Piece,
    plan_parts,
    progress,
    renumber_rejection,
    summed_rows,
)
from chalicelib.batch.keys import CONTENT_TYPES, ShardDone, parse_key
from chalicelib.batch.record import PARTIAL, SUCCEEDED, JobRecord, ended_record
from chalicelib.batch.s3io import delete_prefix, read_range
from chalicelib.batch.tables.formats import JSONL
from chalicelib.errors import BatchFileError

if TYPE_CHECKING:
    from chalicelib.batch.fanout.shard import ShardRun

# Parts of .out sent at once: S3 copies each part at its own pace, so a thousand
# shards' outputs are assembled in a fraction of the time one after another.
_PARTS_IN_FLIGHT = 32


class Assembly:
    """The outputs of a run, assembled by the delivery ``run`` that claimed it."""

    def __init__(self, run: ShardRun) -> None:
        self.shard_run = run
        self.s3 = run.s3
        self.task = run.task
        self.keys = run.keys
        self.base = run.base

    def run(self, markers: list[ShardDone]) -> dict[str, Any]:
        """Assemble ``.out`` and the errors report from the shards ``markers``
        name and end the job; what happened, as ``process_shard`` returns it.
        BatchFileError when the shards' prediction columns differ."""
        shard_run, task = self.shard_run, self.task
        details = [
            shard_run.documents.read(self.keys.done(marker))
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
            return shard_run.fail(
                f"all {rows['rejected']} rows were rejected: see the errors report",
                retryable=False,
                keep_errors=True,
            )
        size = self._assemble_out(shards, CONTENT_TYPES[batch_key.fmt])
        now = shard_run.clock()
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
            shard_run.delete_output(self.base + ".errors.jsonl")
        written = shard_run.update(finished)
        if written is None:
            return shard_run.abandon()
        delete_prefix(self.s3, task.bucket, self.keys.prefix)
        shard_run.log("batch_finished", status=written["status"], shards=len(shards))
        return {"action": "assembled", "index": task.index, "manifest": written}

    def _assemble_out(self, shards: list[dict[str, Any]], content_type: str) -> int:
        """``.out`` from the shards' outputs, in order; its size."""
        bucket, key = self.task.bucket, self.base + ".out"
        sizes = [shard["out_size"] for shard in shards]
        metadata = {"input-etag": self.task.etag.strip('"'), "run-id": self.task.run_id}
        if not sum(sizes):
            self.shard_run.write_output(
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
            parts_plan = plan_parts(sizes, min_part=plan.MIN_PART_BYTES)
            with ThreadPoolExecutor(_PARTS_IN_FLIGHT) as pool:
                etags = pool.map(
                    lambda number, part: self._part(
                        key, upload_id, number, part, shards
                    ),
                    range(1, len(parts_plan) + 1),
                    parts_plan,
                )
                parts = [
                    {"PartNumber": number, "ETag": etag}
                    for number, etag in enumerate(etags, start=1)
                ]
            self.shard_run.write_output(
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
            read_range(
                self.s3, bucket, self._out_of(shards, piece), piece.start, piece.end
            )
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
        upload = self.shard_run.upload(key, CONTENT_TYPES[JSONL])
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
            self.shard_run.write_output(key, upload.publish)
        except BaseException:
            upload.abort()
            raise
        return upload.size


def _shard_summary(shard: dict[str, Any]) -> dict[str, Any]:
    """A shard as the final job record keeps it: bytes, rows (over the file),
    counts and seconds."""
    first = shard["rows_before"] + 1
    return {
        "index": shard["index"],
        "bytes": [shard["start"], shard["end"]],
        "rows": [first, first + shard["read"] - 1],
        "counts": {key: shard[key] for key in ("read", "predicted", "rejected")},
        "seconds": shard["seconds"],
    }
