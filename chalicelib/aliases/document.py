"""An alias's documents and the rules they follow (pure: no I/O).

An alias routes a model's traffic to versions by weight (``Revision.weights``),
may copy some of it to a shadow version (``Shadow``) and capture some of it
(``Capture``). Its head (``AliasDocument``) holds the current revision; each
revision is also kept on its own (``chalicelib.aliases.store``). The head's
object also carries, in its metadata, the manifests of the versions it sends
traffic to (``serving_metadata``): a cold container's first request reads them
with the head instead of reading each manifest and its tombstone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from chalicelib.errors import InvalidAliasError
from chalicelib.registry.manifest import Manifest


def plain_number(value: Any) -> float:
    """``value`` as a number, an int when it is whole: a weight or percentage
    given as 90.0 is kept, written and shown as 90."""
    number = float(value)
    return int(number) if number.is_integer() else number


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
        return cls(plain_number(data["percent"]), tuple(str(p) for p in data["keep"]))


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
            weights={int(v): plain_number(w) for v, w in data["weights"].items()},
            shadow=Shadow(int(shadow["version"]), plain_number(shadow["percent"]))
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
    # The manifests of the versions with a positive weight, heaviest first, as
    # many as fit in the object's metadata (``serving_metadata``): not part of
    # the document itself, nor of its equality.
    serving: tuple[Manifest, ...] = field(default=(), compare=False, repr=False)

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

    @classmethod
    def from_stored(
        cls, data: Mapping[str, Any], metadata: Mapping[str, str]
    ) -> AliasDocument:
        """A head as stored: its JSON ``data`` and the manifests its object's
        ``metadata`` carries (none for a head written before heads carried them)."""
        head = cls.from_dict(data)
        return replace(head, serving=read_serving(head.name, head.weights, metadata))


# S3 user metadata is at most 2 KB, keys and values together; the JSON is ASCII
# (json.dumps escapes the rest), as HTTP headers must be.
SERVING_METADATA_KEY = "turnout-serving"
MAX_SERVING_METADATA_BYTES = 2048


def serving_order(weights: Mapping[int, float]) -> list[int]:
    """The versions that get traffic, heaviest first (the lowest number among
    equals, so the first is ``predictor.primary_version``'s choice)."""
    return sorted(
        (v for v, w in weights.items() if w > 0), key=lambda v: (-weights[v], v)
    )


def serving_metadata(manifests: tuple[Manifest, ...]) -> dict[str, str]:
    """The head object's metadata carrying ``manifests`` (heaviest first): as many
    as fit in S3's 2 KB, none when not even the first does."""
    kept = list(manifests)
    while kept:
        value = json.dumps([m.to_dict() for m in kept], separators=(",", ":"))
        if len(SERVING_METADATA_KEY) + len(value) <= MAX_SERVING_METADATA_BYTES:
            return {SERVING_METADATA_KEY: value}
        kept.pop()
    return {}


def read_serving(
    name: str, weights: Mapping[int, float], metadata: Mapping[str, str]
) -> tuple[Manifest, ...]:
    """The manifests a head's ``metadata`` carries for versions of ``name`` that
    ``weights`` sends traffic to; none when it carries none (a head written
    before heads carried them) or when they cannot be read (the caller then
    reads the manifests themselves)."""
    raw = metadata.get(SERVING_METADATA_KEY)
    if not raw:
        return ()
    try:
        manifests = tuple(Manifest.from_dict(item) for item in json.loads(raw))
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return ()
    return tuple(
        manifest
        for manifest in manifests
        if manifest.name == name and weights.get(manifest.version, 0) > 0
    )


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
