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

    from chalicelib.registry.cache import ManifestCache


class AliasCache:
    """A warm container's copy of alias heads, for serving.

    A copy is trusted for ``ttl_seconds``; after that it is revalidated with a
    conditional GET on its ETag, which costs a 304 and no body when unchanged.
    The manifests a head carries, as read from S3 (not from this cache), are
    offered to ``manifests``: a cold container's first request then reads no
    manifest of its own.
    """

    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        ttl_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        manifests: ManifestCache | None = None,
    ) -> None:
        self._documents = JsonDocuments(s3, bucket)
        self._manifests = manifests
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
        stored = self._documents.read_stored(
            layout.alias_head_key(name, alias),
            unless_etag=entry[1] if entry is not None else None,
        )
        if stored is None:
            with self._lock:
                self._entries.pop((name, alias), None)
            raise AliasNotFoundError(name, alias)
        document = entry[0] if entry and stored.document is NOT_MODIFIED else None
        if document is None:
            document = AliasDocument.from_stored(stored.document, stored.metadata)
            if self._manifests is not None:
                for manifest in document.serving:
                    self._manifests.offer(manifest)
        with self._lock:
            self._entries[(name, alias)] = (document, stored.etag, now)
        return document
