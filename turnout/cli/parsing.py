"""Argument parsing for the ``turnout`` command: text in, values out (pure).

Each parser raises ValueError with a message naming the argument; ``using`` turns
a parser into a click callback, so that click reports it as a usage error.
"""

from __future__ import annotations

import getpass
import math
from collections.abc import Callable, Sequence
from typing import Any

import click

from chalicelib.aliases.document import CAPTURE_PARTS, Shadow
from chalicelib.errors import InvalidNameError
from chalicelib.names import parse_version


def _positive_integer(text: str, what: str) -> int:
    try:
        return parse_version(text)
    except InvalidNameError:
        raise ValueError(f"{what} {text!r} is not a positive integer") from None


def parse_number(text: str, what: str) -> float:
    """'90' -> 90, '2.5' -> 2.5: whole numbers stay integers in the alias document."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None
    return int(value) if value.is_integer() else value


def parse_version_argument(text: str) -> int:
    """'3' -> 3; ValueError unless ``text`` is a positive integer."""
    return _positive_integer(text, "version")


def parse_weight(text: str) -> tuple[int, float]:
    """'1=90' -> (1, 90): a version and its weight; ValueError otherwise.

    Only the syntax is checked here; the alias rules (non-negative weights with a
    positive sum) are the core's (``validate_routing``).
    """
    version, separator, weight = text.partition("=")
    if not separator:
        raise ValueError(f"{text!r} is not VERSION=WEIGHT (for example 1=90)")
    return _positive_integer(version, "version"), parse_number(weight, "weight")


def _unique_pairs[K, V](
    texts: Sequence[str],
    parse: Callable[[str], tuple[K, V]],
    describe: Callable[[K], str],
) -> dict[K, V]:
    """Parse each text into a (key, value) pair; ValueError on a repeated key."""
    pairs: dict[K, V] = {}
    for text in texts:
        key, value = parse(text)
        if key in pairs:
            raise ValueError(f"{describe(key)} is given more than once")
        pairs[key] = value
    return pairs


def parse_weights(texts: Sequence[str]) -> dict[int, float]:
    """('1=90', '2=10') -> {1: 90, 2: 10}; each version at most once."""
    return _unique_pairs(texts, parse_weight, lambda version: f"version {version}")


def parse_shadow(text: str) -> Shadow:
    """'3:5' -> Shadow(version=3, percent=5): version 3 gets a copy of 5 %."""
    version, separator, percent = text.partition(":")
    if not separator:
        raise ValueError(f"{text!r} is not VERSION:PERCENT (for example 3:5)")
    return Shadow(
        _positive_integer(version, "shadow version"),
        parse_number(percent.removesuffix("%"), "shadow percentage"),
    )


def parse_tag(text: str) -> tuple[str, str]:
    """'team=ml' -> ('team', 'ml'); the key must not be empty, the value may be."""
    key, separator, value = text.partition("=")
    if not separator or not key.strip():
        raise ValueError(f"{text!r} is not KEY=VALUE (for example team=ml)")
    return key.strip(), value.strip()


def parse_tags(texts: Sequence[str]) -> dict[str, str]:
    """('a=1', 'b=2') -> {'a': '1', 'b': '2'}; each key at most once."""
    return _unique_pairs(texts, parse_tag, lambda key: f"tag {key!r}")


def parse_labels(text: str) -> list[str]:
    """'a, b,c' -> ['a', 'b', 'c']; the registry checks them against the model."""
    return [label.strip() for label in text.split(",")]


def parse_capture_parts(text: str) -> tuple[str, ...]:
    """'inputs,outputs' -> ('inputs', 'outputs'); ValueError for anything else."""
    parts = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [part for part in parts if part not in CAPTURE_PARTS]
    if unknown or not parts:
        raise ValueError(f"--keep takes {' and/or '.join(CAPTURE_PARTS)}, not {text!r}")
    return parts


def parse_capture_percent(text: str) -> float:
    """'10' -> 10: a share of the requests, in (0, 100]; ValueError otherwise."""
    percent = parse_number(text.removesuffix("%"), "capture percentage")
    if not math.isfinite(percent) or not 0 < percent <= 100:
        raise ValueError(f"capture percentage {text!r} is not in (0, 100]")
    return percent


def using[T](
    parse: Callable[[Any], T],
) -> Callable[[click.Context, click.Parameter, Any], T | None]:
    """A click callback that parses a value with ``parse`` (None stays None)."""

    def callback(
        context: click.Context, parameter: click.Parameter, value: Any
    ) -> T | None:
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as error:
            raise click.BadParameter(str(error)) from None

    return callback


def default_actor() -> str:
    """Who is making a change when --actor is not given: the user, else 'unknown'."""
    try:
        return getpass.getuser() or "unknown"
    except Exception:  # no USER variable and no passwd entry (some containers)
        return "unknown"
