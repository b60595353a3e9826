"""Aliases: weighted sets of versions, changed by compare-and-swap, with history.

One JSON document per alias, ``models/{name}/aliases/{alias}.json``, holds the
current routing and every earlier revision. Each change is a conditional write on
the document's ETag (``IfMatch``; ``IfNoneMatch='*'`` when creating it), so two
operators changing one alias at once never lose an update: the loser gets an
AliasConflictError and can retry on the new state.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from chalicelib.errors import (
    AliasConflictError,
    AliasNotFoundError,
    InvalidAliasError,
    ModelNotFoundError,
    RevisionNotFoundError,
    VersionInUseError,
    VersionNotFoundError,
)
from chalicelib.names import validate_alias_name, validate_model_name
from chalicelib.registry import (
    MODELS_PREFIX,
    Registry,
    error_code,
    is_missing,
    is_precondition_failure,
    iso_timestamp,
    utc_now,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def alias_key(name: str, alias: str) -> str:
    return f"{MODELS_PREFIX}{name}/aliases/{alias}.json"


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
    """An alias: its current routing and its history (oldest first, current last)."""

    name: str
    alias: str
    history: tuple[Revision, ...]

    @property
    def current(self) -> Revision:
        return self.history[-1]

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
            "history": [revision.to_dict() for revision in self.history],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AliasDocument:
        return cls(
            name=str(data["name"]),
            alias=str(data["alias"]),
            history=tuple(Revision.from_dict(item) for item in data["history"]),
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
    """Read and change aliases; versions are checked against ``registry``."""

    def __init__(
        self, registry: Registry, *, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.registry = registry
        self._clock = clock

    @property
    def _s3(self) -> S3Client:
        return self.registry.s3

    @property
    def _bucket(self) -> str:
        return self.registry.bucket

    def read(self, name: str, alias: str) -> tuple[AliasDocument, str]:
        """The alias and its ETag; AliasNotFoundError if it does not exist."""
        validate_model_name(name)
        validate_alias_name(alias)
        try:
            response = self._s3.get_object(
                Bucket=self._bucket, Key=alias_key(name, alias)
            )
        except ClientError as error:
            if is_missing(error):
                raise AliasNotFoundError(name, alias) from None
            raise
        document = AliasDocument.from_dict(json.loads(response["Body"].read()))
        return document, response["ETag"]

    def get(self, name: str, alias: str) -> AliasDocument:
        return self.read(name, alias)[0]

    def list_aliases(self, name: str) -> list[AliasDocument]:
        """Every alias of ``name``, sorted by alias name."""
        validate_model_name(name)
        prefix = f"{MODELS_PREFIX}{name}/aliases/"
        documents = []
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self._bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                leaf = item["Key"][len(prefix) :]
                if leaf.endswith(".json") and "/" not in leaf:
                    try:
                        documents.append(self.get(name, leaf[: -len(".json")]))
                    except AliasNotFoundError:
                        continue  # deleted between the listing and the read
        return sorted(documents, key=lambda document: document.alias)

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

        Every version named must exist. ``expected_revision`` (0 for "must not exist
        yet") makes the update conditional on what the caller last saw; without it
        the update still never overwrites a change made since this call's own read.
        """
        validate_model_name(name)
        validate_alias_name(alias)
        validate_routing(weights, shadow)
        self._check_versions_exist(
            name, set(weights) | ({shadow.version} if shadow else set())
        )
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
            if to_revision is None:
                if len(document.history) < 2:
                    raise InvalidAliasError(
                        f"{name}@{alias} has a single revision: nothing to roll back to"
                    )
                target = document.history[-2]
            else:
                found = [r for r in document.history if r.revision == to_revision]
                if not found:
                    raise RevisionNotFoundError(name, alias, to_revision)
                target = found[0]
            self._check_versions_exist(name, target.versions())
            # Rolling back restores routing; what is captured stays as it is.
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
        key = alias_key(name, alias)
        try:
            document: AliasDocument | None
            document, etag = self.read(name, alias)
        except AliasNotFoundError:
            document, etag = None, ""
        current = document.revision if document else 0
        if expected_revision is not None and expected_revision != current:
            raise AliasConflictError(name, alias, current or None)
        revision = replace(
            build(document),
            revision=current + 1,
            updated_at=iso_timestamp(self._clock()),
        )
        history = (document.history if document else ()) + (revision,)
        updated = AliasDocument(name=name, alias=alias, history=history)
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            self._s3.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=json.dumps(updated.to_dict(), indent=1).encode(),
                ContentType="application/json",
                **condition,  # type: ignore[arg-type]
            )
        except ClientError as error:
            if not is_precondition_failure(error):
                raise
            try:
                now = self.get(name, alias).revision
            except AliasNotFoundError:
                now = None
            raise AliasConflictError(name, alias, now) from None
        return updated

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

    def delete_version(self, name: str, version: int) -> None:
        """Delete a version unless an alias routes to it (VersionInUseError)."""
        in_use = self.aliases_routing_to(name, version)
        if in_use:
            raise VersionInUseError(name, version, in_use)
        self.registry.remove_version(name, version)


class AliasCache:
    """A warm container's copy of alias documents, for serving.

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
        self._s3 = s3
        self._bucket = bucket
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[AliasDocument, str, float]] = {}
        self._lock = threading.Lock()

    def get(self, name: str, alias: str) -> AliasDocument:
        """The alias's current document; AliasNotFoundError if it does not exist,
        InvalidNameError if a name is invalid (checked before reading S3, so the
        cache only ever holds valid names)."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get((name, alias))
        if entry is not None and now - entry[2] < self._ttl:
            return entry[0]
        validate_model_name(name)
        validate_alias_name(alias)
        request: dict[str, Any] = {
            "Bucket": self._bucket,
            "Key": alias_key(name, alias),
        }
        if entry is not None:
            request["IfNoneMatch"] = entry[1]
        try:
            response = self._s3.get_object(**request)
        except ClientError as error:
            if entry is not None and error_code(error) in {"304", "NotModified"}:
                document, etag = entry[0], entry[1]
            elif is_missing(error):
                with self._lock:
                    self._entries.pop((name, alias), None)
                raise AliasNotFoundError(name, alias) from None
            else:
                raise
        else:
            document = AliasDocument.from_dict(json.loads(response["Body"].read()))
            etag = response["ETag"]
        with self._lock:
            self._entries[(name, alias)] = (document, etag, now)
        return document
