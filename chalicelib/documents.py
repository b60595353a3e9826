"""JSON documents in S3, changed by compare-and-swap on their ETag.

``read`` gives a document and its ETag (None when there is none); ``write`` is
conditional on the ETag the caller read (``IfMatch``), or on the key being absent
(``IfNoneMatch='*'``), and raises DocumentConflictError when someone else wrote,
created or deleted it first. Alias heads and revisions, version claims, manifests
and tombstones are kept this way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import ClientError

from chalicelib.errors import DocumentConflictError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def is_precondition_failure(error: ClientError) -> bool:
    """True for a lost conditional write (412, or 409 when S3 saw a race)."""
    return error_code(error) in {
        "PreconditionFailed",
        "412",
        "ConditionalRequestConflict",
        "409",
    }


def is_missing(error: ClientError) -> bool:
    return error_code(error) in {"NoSuchKey", "404", "NotFound"}


class NotModified:
    """What ``read`` gives instead of a document the caller already has."""


NOT_MODIFIED: Final = NotModified()


@dataclass(frozen=True)
class StoredDocument:
    """A document as read: its JSON (or NOT_MODIFIED), its ETag and the object's
    user metadata (empty when not transferred)."""

    document: Any
    etag: str
    metadata: Mapping[str, str]


class JsonDocuments:
    """JSON documents under keys of ``bucket``."""

    def __init__(self, s3: S3Client, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket

    def read(
        self, key: str, *, unless_etag: str | None = None
    ) -> tuple[Any, str] | None:
        """The document at ``key`` and its ETag; None when there is none. With
        ``unless_etag``, a document still at that ETag is not transferred:
        ``(NOT_MODIFIED, unless_etag)``. ValueError when it is not JSON."""
        stored = self.read_stored(key, unless_etag=unless_etag)
        return None if stored is None else (stored.document, stored.etag)

    def read_stored(
        self, key: str, *, unless_etag: str | None = None
    ) -> StoredDocument | None:
        """Like ``read``, with the object's user metadata."""
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if unless_etag is not None:
            request["IfNoneMatch"] = unless_etag
        try:
            response = self.s3.get_object(**request)
        except ClientError as error:
            if unless_etag is not None and error_code(error) in {"304", "NotModified"}:
                return StoredDocument(NOT_MODIFIED, unless_etag, {})
            if is_missing(error):
                return None
            raise
        return StoredDocument(
            json.loads(response["Body"].read()),
            response["ETag"],
            response.get("Metadata") or {},
        )

    def write(
        self,
        key: str,
        document: Any,
        *,
        etag: str | None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Write ``document`` (with the object's user ``metadata``) at ``key`` if it
        is still at ``etag`` (None: if there is no document yet) and return its new
        ETag; DocumentConflictError if not."""
        condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
        try:
            response = self.s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=json.dumps(document, indent=2).encode(),
                ContentType="application/json",
                Metadata=dict(metadata or {}),
                **condition,  # type: ignore[arg-type]
            )
        except ClientError as error:
            if is_precondition_failure(error) or is_missing(error):
                raise DocumentConflictError(key) from None
            raise
        return response["ETag"]

    def etag(self, key: str) -> str | None:
        """The ETag of the object at ``key`` (None when there is none), without
        reading it: whether a document is still the one a writer last wrote."""
        try:
            return self.s3.head_object(Bucket=self.bucket, Key=key)["ETag"]
        except ClientError as error:
            if is_missing(error):
                return None
            raise
