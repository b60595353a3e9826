"""The alias heads a warm container serves from, revalidated after a TTL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from chalicelib import layout
from chalicelib.aliases.document import AliasDocument
from chalicelib.documents import NOT_MODIFIED, JsonDocuments
from chalicelib.errors import AliasNotFoundError
from chalicelib.names import validate_alias_name, validate_model_name

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class AliasCache:
    """A warm container's copy of alias heads, for serving.

    A copy is trusted for ``ttl_seconds``; after that it is revalidated with a
    conditional GET on its ETag, which costs a 304 and no body when unchanged.
    """

    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        ttl_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._documents = JsonDocuments(s3, bucket)
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[AliasDocument, str, float]] = {}
        self._lock = threading.Lock()

    def get(self, name: str, alias: str) -> AliasDocument:
        """The alias's current head; AliasNotFoundError if it does not exist,
        InvalidNameError if a name is invalid (checked before reading S3, so the
        cache only ever holds valid names)."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get((name, alias))
        if entry is not None and now - entry[2] < self._ttl:
            return entry[0]
        validate_model_name(name)
        validate_alias_name(alias)
        found = self._documents.read(
            layout.alias_head_key(name, alias),
            unless_etag=entry[1] if entry is not None else None,
        )
        if found is None:
            with self._lock:
                self._entries.pop((name, alias), None)
            raise AliasNotFoundError(name, alias)
        stored, etag = found
        document = entry[0] if entry and stored is NOT_MODIFIED else None
        if document is None:
            document = AliasDocument.from_dict(stored)
        with self._lock:
            self._entries[(name, alias)] = (document, etag, now)
        return document
