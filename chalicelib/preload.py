"""Preloading: the models a function loads during its init (TURNOUT_PRELOAD),
so that no request waits for them.

Lambda bills init like any other time (since August 2025), and gives it the
same CPU as the invocations; what preloading buys is the first request's
latency, not money.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from chalicelib.aliases.document import serving_order
from chalicelib.errors import InvalidNameError
from chalicelib.names import parse_version, validate_alias_name, validate_model_name
from chalicelib.predictor import Predictor

logger = logging.getLogger("turnout.preload")


@dataclass(frozen=True)
class PreloadTarget:
    """One entry of TURNOUT_PRELOAD: a model and one of its aliases or versions."""

    name: str
    alias: str | None = None
    version: int | None = None

    def __str__(self) -> str:
        return f"{self.name}@{self.alias if self.version is None else self.version}"


def parse_preload(text: str) -> tuple[PreloadTarget, ...]:
    """The targets of a TURNOUT_PRELOAD value: comma-separated ``model@alias`` or
    ``model@version`` (spaces around entries ignored; empty: none). ValueError
    names the first entry that is neither, or whose names are invalid."""
    targets = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry and not text.strip():
            continue
        name, at, which = entry.partition("@")
        if not at or not name or not which:
            raise ValueError(
                f"TURNOUT_PRELOAD entry {entry!r} is not model@alias or model@version"
            )
        try:
            validate_model_name(name)
            if which.isdigit():
                targets.append(PreloadTarget(name, version=parse_version(which)))
            else:
                targets.append(PreloadTarget(name, alias=validate_alias_name(which)))
        except InvalidNameError as error:
            raise ValueError(f"TURNOUT_PRELOAD entry {entry!r}: {error}") from None
    return tuple(targets)


def preload_models(predictor: Predictor, targets: tuple[PreloadTarget, ...]) -> None:
    """Load each target's sessions into ``predictor``'s cache: the version named,
    or every version the alias sends traffic to. A target that cannot be loaded
    is logged and skipped: its requests then meet the error themselves."""
    for target in targets:
        started = time.perf_counter()
        try:
            if target.version is not None:
                versions = [target.version]
            else:
                versions = serving_order(
                    predictor.alias(target.name, target.alias).weights
                )
            for version in versions:
                predictor.models.get(predictor.manifest(target.name, version))
        except Exception:
            logger.exception("could not preload %s", target)
            continue
        logger.info(
            "preloaded %s: version %s in %.0f ms",
            target,
            ", ".join(map(str, versions)),
            (time.perf_counter() - started) * 1000.0,
        )
