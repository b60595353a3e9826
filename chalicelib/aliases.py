"""Aliases: weighted sets of versions, changed by compare-and-swap, with history.

Each alias is a small head document, ``models/{name}/aliases/{alias}.json``, that
holds the current revision and is all that serving reads, and one immutable
object per revision under ``models/{name}/aliases/{alias}/revisions/`` (keys in
``chalicelib.layout``). A change writes its revision object first, then the head
conditionally on the ETag it read (``IfMatch``; ``IfNoneMatch='*'`` when creating
it), so two operators changing one alias at once never lose an update (the loser
gets an AliasConflictError and can retry on the new state) and the history is
never lost: each revision object names the one before it, and the head names the
one that won.

Deleting a version writes its tombstone, then re-writes every head that does not
route to it (``fence`` counts these writes): a change that checked the version
before the tombstone and writes after it finds the head changed and conflicts.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from chalicelib import layout
from chalicelib.clock import iso_timestamp, utc_now
from chalicelib.documents import NOT_MODIFIED, JsonDocuments
from chalicelib.errors import (
    AliasConflictError,
    AliasNotFoundError,
    DocumentConflictError,
    InvalidAliasError,
    ModelNotFoundError,
    RevisionNotFoundError,
    VersionInUseError,
    VersionNotFoundError,
)
from chalicelib.names import validate_alias_name, validate_model_name
from chalicelib.registry import Registry

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_MAX_FENCE_ATTEMPTS = 20


@dataclass(frozen=True)
class Shadow:
    """A version that gets a copy of ``percent`` % of the traffic, never answering."""

    version: int
    percent: float

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "percent": self.percent}


CAPTURE_PARTS = ("inputs", "outputs")


@dataclass(frozen=True)
class Capture:
    """Data capture: ``percent`` % of the alias's answered requests are written
    to the capture bucket, with the ``keep`` parts (inputs, outputs or both)."""

    percent: float
    keep: tuple[str, ...] = CAPTURE_PARTS

    def to_dict(self) -> dict[str, Any]:
        return {"percent": self.percent, "keep": list(self.keep)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Capture:
        return cls(_number(data["percent"]), tuple(str(p) for p in data["keep"]))


def validate_capture(capture: Capture) -> None:
    """Pure checks of a capture setting; InvalidAliasError names the rule broken."""
    if not math.isfinite(capture.percent) or not 0 < capture.percent <= 100:
        raise InvalidAliasError(
            f"capture percentage {capture.percent} is not in (0, 100]"
        )
    unknown = sorted(set(capture.keep) - set(CAPTURE_PARTS))
    if unknown or not capture.keep:
        raise InvalidAliasError(
            f"capture keeps {', '.join(CAPTURE_PARTS)} (one or both), "
            f"not {', '.join(unknown) or 'nothing'}"
        )


@dataclass(frozen=True)
class Revision:
    revision: int
    weights: dict[int, float]
    shadow: Shadow | None
    updated_at: str
    actor: str
    reason: str
    capture: Capture | None = None

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "revision": self.revision,
            "weights": {str(v): w for v, w in sorted(self.weights.items())},
            "shadow": self.shadow.to_dict() if self.shadow else None,
            "updated_at": self.updated_at,
            "actor": self.actor,
            "reason": self.reason,
        }
        # Written only when set: documents of aliases that never captured stay
        # as they were.
        if self.capture is not None:
            document["capture"] = self.capture.to_dict()
        return document

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Revision:
        shadow = data.get("shadow")
        capture = data.get("capture")
        return cls(
            revision=int(data["revision"]),
            weights={int(v): _number(w) for v, w in data["weights"].items()},
            shadow=Shadow(int(shadow["version"]), _number(shadow["percent"]))
            if shadow
            else None,
            updated_at=str(data.get("updated_at", "")),
            actor=str(data.get("actor", "")),
            reason=str(data.get("reason", "")),
            capture=Capture.from_dict(capture) if capture else None,
        )

    def versions(self) -> set[int]:
        """Every version this revision routes to: by weight (even 0) or as shadow."""
        named = set(self.weights)
        if self.shadow:
            named.add(self.shadow.version)
        return named


@dataclass(frozen=True)
class AliasDocument:
    """An alias's head: its current revision, the id of that revision's object,
    and how many deletions have fenced it."""

    name: str
    alias: str
    current: Revision
    revision_id: str
    fence: int = 0

    @property
    def revision(self) -> int:
        return self.current.revision

    @property
    def weights(self) -> dict[int, float]:
        return self.current.weights

    @property
    def shadow(self) -> Shadow | None:
        return self.current.shadow

    @property
    def capture(self) -> Capture | None:
        return self.current.capture

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "alias": self.alias,
            **self.current.to_dict(),
            "revision_id": self.revision_id,
            "fence": self.fence,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AliasDocument:
        return cls(
            name=str(data["name"]),
            alias=str(data["alias"]),
            current=Revision.from_dict(data),
            revision_id=str(data["revision_id"]),
            fence=int(data.get("fence", 0)),
        )


def _number(value: Any) -> float:
    number = float(value)
    return int(number) if number.is_integer() else number


def validate_routing(weights: Mapping[int, float], shadow: Shadow | None) -> None:
    """Pure checks of an alias's routing; InvalidAliasError names the rule broken."""
    if not weights:
        raise InvalidAliasError("give at least one version and its weight")
    for version, weight in weights.items():
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise InvalidAliasError(f"version {version!r} is not a positive integer")
        if not isinstance(weight, int | float) or not math.isfinite(weight):
            raise InvalidAliasError(f"weight of version {version} is not a number")
        if weight < 0:
            raise InvalidAliasError(f"weight of version {version} is negative")
    if sum(weights.values()) <= 0:
        raise InvalidAliasError("the weights must have a positive sum")
    if shadow is not None:
        if not isinstance(shadow.version, int) or shadow.version < 1:
            raise InvalidAliasError(f"shadow version {shadow.version!r} is not valid")
        if not math.isfinite(shadow.percent) or not 0 < shadow.percent <= 100:
            raise InvalidAliasError(
                f"shadow percentage {shadow.percent} is not in (0, 100]"
            )


class AliasStore:
    """Read and change aliases; versions are checked against ``registry``.

    ``suffix`` makes each revision object's key unique (random by default)."""

    def __init__(
        self,
        registry: Registry,
        *,
        clock: Callable[[], datetime] = utc_now,
        suffix: Callable[[], str] = lambda: uuid.uuid4().hex[:12],
    ) -> None:
        self.registry = registry
        self._documents = JsonDocuments(registry.s3, registry.bucket)
        self._clock = clock
        self._suffix = suffix

    def read(self, name: str, alias: str) -> tuple[AliasDocument, str]:
        """The alias's head and its ETag; AliasNotFoundError if it does not exist."""
        validate_model_name(name)
        validate_alias_name(alias)
        found = self._documents.read(layout.alias_head_key(name, alias))
        if found is None:
            raise AliasNotFoundError(name, alias)
        return AliasDocument.from_dict(found[0]), found[1]

    def get(self, name: str, alias: str) -> AliasDocument:
        return self.read(name, alias)[0]

    def history(self, name: str, alias: str) -> tuple[Revision, ...]:
        """Every revision of the alias, oldest first, read from the revision
        objects (one GET each, walking back from the head)."""
        return tuple(reversed(list(self._revisions_back(self.get(name, alias)))))

    def _revisions_back(self, document: AliasDocument) -> Iterator[Revision]:
        """The alias's revisions, newest first, read lazily."""
        revision_id: str | None = document.revision_id
        while revision_id is not None:
            found = self._documents.read(
                layout.alias_revision_key(document.name, document.alias, revision_id)
            )
            if found is None:
                raise RevisionNotFoundError(document.name, document.alias, revision_id)
            yield Revision.from_dict(found[0])
            previous = found[0].get("previous")
            revision_id = None if previous is None else str(previous)

    def list_aliases(self, name: str) -> list[AliasDocument]:
        """Every alias of ``name`` (its head), sorted by alias name."""
        documents = []
        for alias in self._alias_names(name):
            try:
                documents.append(self.get(name, alias))
            except AliasNotFoundError:
                continue  # deleted between the listing and the read
        return sorted(documents, key=lambda document: document.alias)

    def _alias_names(self, name: str) -> list[str]:
        validate_model_name(name)
        prefix = layout.aliases_prefix(name)
        names = []
        paginator = self.registry.s3.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.registry.bucket, Prefix=prefix, Delimiter="/"
        )
        for page in pages:
            for item in page.get("Contents", []):
                leaf = item["Key"][len(prefix) :]
                if leaf.endswith(".json"):
                    names.append(leaf[: -len(".json")])
        return names

    def set_routing(
        self,
        name: str,
        alias: str,
        weights: Mapping[int, float],
        *,
        shadow: Shadow | None = None,
        actor: str,
        reason: str = "",
        expected_revision: int | None = None,
    ) -> AliasDocument:
        """Route ``alias`` by ``weights`` (and ``shadow``) as a new revision.

        Every version named must exist and not be deleted. ``expected_revision``
        (0 for "must not exist yet") makes the update conditional on what the
        caller last saw; without it the update still never overwrites a change
        made since this call's own read.
        """
        validate_model_name(name)
        validate_alias_name(alias)
        validate_routing(weights, shadow)
        return self._write_revision(
            name,
            alias,
            lambda previous: Revision(
                revision=0,
                weights={int(v): _number(w) for v, w in weights.items()},
                shadow=shadow,
                updated_at="",
                actor=actor,
                reason=reason,
                capture=previous.capture if previous else None,
            ),
            expected_revision=expected_revision,
        )

    def promote(
        self, name: str, alias: str, version: int, *, actor: str, reason: str = ""
    ) -> AliasDocument:
        """Send all of the alias's traffic to ``version`` (its shadow is dropped)."""
        return self.set_routing(
            name,
            alias,
            {version: 100},
            actor=actor,
            reason=reason or f"promote {version}",
        )

    def rollback(
        self,
        name: str,
        alias: str,
        *,
        actor: str,
        reason: str = "",
        to_revision: int | None = None,
    ) -> AliasDocument:
        """Restore an earlier revision (by default the one before the current) as a
        new revision. Its versions must still exist."""

        def restore(document: AliasDocument | None) -> Revision:
            if document is None:
                raise AliasNotFoundError(name, alias)
            wanted = document.revision - 1 if to_revision is None else to_revision
            if to_revision is None and wanted < 1:
                raise InvalidAliasError(
                    f"{name}@{alias} has a single revision: nothing to roll back to"
                )
            target = next(
                (r for r in self._revisions_back(document) if r.revision <= wanted),
                None,
            )
            if target is None or target.revision != wanted:
                raise RevisionNotFoundError(name, alias, wanted)
            return replace(
                target,
                capture=document.capture,
                actor=actor,
                reason=reason or f"rollback to revision {target.revision}",
            )

        return self._write_revision(name, alias, restore, expected_revision=None)

    def set_capture(
        self,
        name: str,
        alias: str,
        capture: Capture | None,
        *,
        actor: str,
        reason: str = "",
    ) -> AliasDocument:
        """Capture ``capture.percent`` % of the alias's requests (None: stop), as a
        new revision with the same routing. AliasNotFoundError if the alias does
        not exist."""
        if capture is not None:
            validate_capture(capture)

        def recapture(document: AliasDocument | None) -> Revision:
            if document is None:
                raise AliasNotFoundError(name, alias)
            default = (
                f"capture {_number(capture.percent)}%" if capture else "capture off"
            )
            return replace(
                document.current, capture=capture, actor=actor, reason=reason or default
            )

        return self._write_revision(name, alias, recapture, expected_revision=None)

    def _write_revision(
        self,
        name: str,
        alias: str,
        build: Callable[[AliasDocument | None], Revision],
        *,
        expected_revision: int | None,
    ) -> AliasDocument:
        """Write the revision ``build`` makes of the head as it is now: its object
        first, then the head, on the condition that the head has not changed."""
        try:
            document: AliasDocument | None
            document, etag = self.read(name, alias)
        except AliasNotFoundError:
            document, etag = None, None
        current = document.revision if document else 0
        if expected_revision is not None and expected_revision != current:
            raise AliasConflictError(name, alias, current or None)
        revision = replace(
            build(document),
            revision=current + 1,
            updated_at=iso_timestamp(self._clock()),
        )
        self._check_versions_exist(name, revision.versions())
        revision_id = layout.revision_id(revision.revision, self._suffix())
        self._documents.write(
            layout.alias_revision_key(name, alias, revision_id),
            {
                **revision.to_dict(),
                "previous": document.revision_id if document else None,
            },
            etag=None,
        )
        updated = AliasDocument(
            name=name,
            alias=alias,
            current=revision,
            revision_id=revision_id,
            fence=document.fence if document else 0,
        )
        self._before_head_write(updated)
        try:
            self._documents.write(
                layout.alias_head_key(name, alias), updated.to_dict(), etag=etag
            )
        except DocumentConflictError:
            try:
                now = self.get(name, alias).revision
            except AliasNotFoundError:
                now = None
            raise AliasConflictError(name, alias, now) from None
        if document is None:
            self._undo_if_deleted_meanwhile(updated)
        return updated

    def _before_head_write(self, document: AliasDocument) -> None:
        """Called between the checks of a change and its head's write (a seam for
        tests of what can happen in between); does nothing."""

    def _undo_if_deleted_meanwhile(self, created: AliasDocument) -> None:
        """A new head has no ETag for a deletion to fence: check its versions
        after writing it, and remove it (VersionNotFoundError) if one of them
        was deleted meanwhile."""
        try:
            self._check_versions_exist(created.name, created.current.versions())
        except (VersionNotFoundError, ModelNotFoundError):
            self.registry.s3.delete_object(
                Bucket=self.registry.bucket,
                Key=layout.alias_head_key(created.name, created.alias),
            )
            raise

    def _check_versions_exist(self, name: str, versions: set[int]) -> None:
        existing = set(self.registry.list_versions(name))
        if not existing:
            raise ModelNotFoundError(name)
        missing = sorted(versions - existing)
        if missing:
            raise VersionNotFoundError(name, missing[0])

    def aliases_routing_to(self, name: str, version: int) -> list[str]:
        """Aliases whose current revision routes to ``version`` (weight or shadow)."""
        return [
            document.alias
            for document in self.list_aliases(name)
            if version in document.current.versions()
        ]

    def delete_version(self, name: str, version: int, *, actor: str = "") -> None:
        """Delete a version unless an alias routes to it (VersionInUseError).

        The tombstone comes first: from then on ``set_routing`` and ``rollback``
        refuse the version. Then every head is fenced (re-written, so that a
        change that checked the version before the tombstone conflicts) and
        checked once more; only then are the manifest and the artifact removed.
        """
        in_use = self.aliases_routing_to(name, version)
        if in_use:
            raise VersionInUseError(name, version, in_use)
        self.registry.write_tombstone(name, version, actor=actor)
        in_use = [
            alias
            for alias in self._alias_names(name)
            if not self._fence(name, alias, version)
        ]
        if in_use:
            self.registry.remove_tombstone(name, version)
            raise VersionInUseError(name, version, in_use)
        self.registry.remove_version(name, version)

    def _fence(self, name: str, alias: str, version: int) -> bool:
        """Re-write the alias's head unchanged but for its fence; False (and no
        write) when it routes to ``version``."""
        for _ in range(_MAX_FENCE_ATTEMPTS):
            try:
                document, etag = self.read(name, alias)
            except AliasNotFoundError:
                return True
            if version in document.current.versions():
                return False
            fenced = replace(document, fence=document.fence + 1)
            try:
                self._documents.write(
                    layout.alias_head_key(name, alias), fenced.to_dict(), etag=etag
                )
                return True
            except DocumentConflictError:
                continue  # changed meanwhile: look again
        raise AliasConflictError(name, alias, None)


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
