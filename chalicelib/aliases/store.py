"""The alias store: heads, revision history and compare-and-swap, in S3.

Each alias is a small head document, ``models/{name}/aliases/{alias}.json``, that
holds the current revision and is all that serving reads, and one immutable
object per revision under ``models/{name}/aliases/{alias}/revisions/`` (keys in
``chalicelib.layout``). A change writes its revision object first, then the head
conditionally on the ETag it read (``IfMatch``; ``IfNoneMatch='*'`` when creating
it), so two operators changing one alias at once never lose an update (the loser
gets an AliasConflictError and can retry on the new state) and the history is
never lost: each revision object names the one before it, and the head names the
one that won.

Deleting a version (``chalicelib.registry.deletion``) writes its tombstone, then
fences every head that does not route to it (re-writes it, ``fence`` counting
these writes): a change that checked the version before the tombstone and writes
after it finds the head changed and conflicts.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime

from chalicelib import layout
from chalicelib.aliases.document import (
    AliasDocument,
    Capture,
    Revision,
    Shadow,
    plain_number,
    serving_metadata,
    serving_order,
    validate_capture,
    validate_routing,
)
from chalicelib.clock import iso_timestamp, utc_now
from chalicelib.documents import JsonDocuments
from chalicelib.errors import (
    AliasConflictError,
    AliasNotFoundError,
    DocumentConflictError,
    InvalidAliasError,
    ModelIntegrityError,
    ModelNotFoundError,
    RevisionNotFoundError,
    VersionNotFoundError,
)
from chalicelib.names import validate_alias_name, validate_model_name
from chalicelib.registry import deletion
from chalicelib.registry.manifest import Manifest
from chalicelib.registry.versions import Registry

_MAX_FENCE_ATTEMPTS = 20


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
        stored = self._documents.read_stored(layout.alias_head_key(name, alias))
        if stored is None:
            raise AliasNotFoundError(name, alias)
        return AliasDocument.from_stored(stored.document, stored.metadata), stored.etag

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
                weights={int(v): plain_number(w) for v, w in weights.items()},
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
                f"capture {plain_number(capture.percent)}%"
                if capture
                else "capture off"
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
        serving = self._serving_manifests(name, revision.weights)
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
            serving=serving,
        )
        self._before_head_write(updated)
        try:
            self._write_head(updated, etag)
        except DocumentConflictError:
            try:
                now = self.get(name, alias).revision
            except AliasNotFoundError:
                now = None
            raise AliasConflictError(name, alias, now) from None
        if document is None:
            self._undo_if_deleted_meanwhile(updated)
        return updated

    def _serving_manifests(
        self, name: str, weights: Mapping[int, float]
    ) -> tuple[Manifest, ...]:
        """The manifests of the versions ``weights`` sends traffic to, heaviest
        first; one that fails its integrity check is left for the serving
        container to find (and refuse) by reading it."""
        manifests = []
        for version in serving_order(weights):
            try:
                manifests.append(self.registry.get_manifest(name, version))
            except ModelIntegrityError:
                continue
        return tuple(manifests)

    def _write_head(self, document: AliasDocument, etag: str | None) -> None:
        """Write the head on the condition that it is still at ``etag``, the
        manifests it serves in its metadata."""
        self._documents.write(
            layout.alias_head_key(document.name, document.alias),
            document.to_dict(),
            etag=etag,
            metadata=serving_metadata(document.serving),
        )

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
        """Delete a version unless an alias routes to it (VersionInUseError):
        ``chalicelib.registry.deletion`` does it, and says how. Offered here too
        because deleting needs the alias store, and its callers have one."""
        deletion.delete_version(self, name, version, actor=actor)

    def fence_heads(self, name: str, version: int) -> list[str]:
        """Re-write every head of ``name`` unchanged but for its fence count, on
        the ETag read, so that a change that checked ``version`` before now and
        writes its head after conflicts. A head that routes to ``version`` is
        left as it is: the result names those aliases."""
        return [
            alias
            for alias in self._alias_names(name)
            if not self._fence(name, alias, version)
        ]

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
            try:
                self._write_head(replace(document, fence=document.fence + 1), etag)
                return True
            except DocumentConflictError:
                continue  # changed meanwhile: look again
        raise AliasConflictError(name, alias, None)
