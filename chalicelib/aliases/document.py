"""An alias's documents and the rules they follow (pure: no I/O).

An alias routes a model's traffic to versions by weight (``Revision.weights``),
may copy some of it to a shadow version (``Shadow``) and capture some of it
(``Capture``). Its head (``AliasDocument``) holds the current revision; each
revision is also kept on its own (``chalicelib.aliases.store``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chalicelib.errors import InvalidAliasError


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
