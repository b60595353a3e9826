"""S3 I/O for batch jobs: the input read in blocks (whole or a byte range,
gunzipped a bounded step at a time), outputs written in parts by a background
thread, ``Prefetch``, which runs a producer on its own thread ahead of its
consumer so that reading, parsing and predicting overlap, and the small calls
around them (ranged reads, listings, deletes, write conditions).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from chalicelib.documents import error_code, is_missing, is_precondition_failure
from chalicelib.errors import BatchFileError, SourceChangedError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger("turnout.batch")

# Output is compressed when the input was, at a level that keeps up with the rows.
_GZIP_LEVEL = 1
# Output parts sent at once: one connection to S3 carries about 80 MB/s, the
# output of 2M iris rows a second is about 140 MB/s. Their threads wait on the
# network with the GIL released; each part on its way is memory held.
_PARTS_IN_FLIGHT = 2

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
    """The object's bytes (or those from ``start`` to ``end``, exclusive),
    decompressed, in blocks of at most ``block_bytes``.

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
        start: int = 0,
        end: int | None = None,
    ) -> None:
        self._request = {"Bucket": bucket, "Key": key, "IfMatch": etag}
        if start or end is not None:
            last = "" if end is None else str(end - 1)
            self._request["Range"] = f"bytes={start}-{last}"
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
    """An S3 object written in parts by a background thread (up to
    ``parts_in_flight`` parts sent at once), visible only once ``publish``
    completes it: a single PutObject when it fits in one part, else a multipart
    upload. ``abort`` leaves nothing behind."""

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
        parts_in_flight: int = _PARTS_IN_FLIGHT,
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
        self._parts_in_flight = parts_in_flight
        self._sending: deque[tuple[int, Future[str]]] = deque()
        self._sender: ThreadPoolExecutor | None = None
        self._parts_sent = 0
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
            if self._tail or not self._parts_sent:
                self._send_part(self._tail)
            self._tail = b""
            try:
                while self._sending:
                    self._collect_part()
            finally:
                self._stop_sending()

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
        self._stop_sending()
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
        """Start sending ``data`` as the next part, once fewer than
        ``parts_in_flight`` are on their way."""
        if self._upload_id is None:
            created = self.s3.create_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                ContentType=self._content_type,
                Metadata=self._metadata,
            )
            self._upload_id = created["UploadId"]
        while len(self._sending) >= self._parts_in_flight:
            self._collect_part()
        if self._sender is None:
            self._sender = ThreadPoolExecutor(
                self._parts_in_flight, thread_name_prefix="turnout-batch-part"
            )
        self._parts_sent += 1
        number = self._parts_sent
        sent = self._sender.submit(self._upload_part, self._upload_id, number, data)
        self._sending.append((number, sent))

    def _upload_part(self, upload_id: str, number: int, data: bytes) -> str:
        response = self.s3.upload_part(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
        )
        return response["ETag"]

    def _collect_part(self) -> None:
        """Wait for the oldest part on its way (its error is raised here)."""
        number, sending = self._sending.popleft()
        self._parts.append({"PartNumber": number, "ETag": sending.result()})

    def _stop_sending(self) -> None:
        """Wait for every part on its way, whatever happens to it."""
        wait([sending for _, sending in self._sending])
        self._sending.clear()
        if self._sender is not None:
            self._sender.shutdown()
            self._sender = None


def write_condition(s3: S3Client, bucket: str, key: str) -> dict[str, str]:
    """``IfMatch`` the ETag of the object at ``key``, or ``IfNoneMatch`` when there
    is none: a write that fails if someone else wrote the object in between."""
    try:
        etag = s3.head_object(Bucket=bucket, Key=key)["ETag"]
    except ClientError as error:
        if is_missing(error):
            return {"IfNoneMatch": "*"}
        raise
    return {"IfMatch": etag}


def read_range(
    s3: S3Client,
    bucket: str,
    key: str,
    start: int,
    end: int,
    *,
    etag: str | None = None,
) -> bytes:
    """Bytes ``start`` to ``end`` (exclusive) of the object; with ``etag``, only
    while the object is still at it (SourceChangedError when it is not)."""
    request: dict[str, str] = {
        "Bucket": bucket,
        "Key": key,
        "Range": f"bytes={start}-{end - 1}",
    }
    if etag is not None:
        request["IfMatch"] = etag
    try:
        response = s3.get_object(**request)  # type: ignore[arg-type]
    except ClientError as error:
        if etag is not None and is_precondition_failure(error):
            raise SourceChangedError(key) from None
        raise
    return response["Body"].read()


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


def delete_prefix(
    s3: S3Client, bucket: str, prefix: str, *, keep: str | None = None
) -> None:
    """Delete the objects under ``prefix`` (but those under ``keep``) and abort the
    multipart uploads to it."""
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
