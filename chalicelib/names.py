"""Rules for model names, alias names and version numbers (pure)."""

from __future__ import annotations

import re

from chalicelib.errors import InvalidNameError

MAX_NAME_LENGTH = 63
# More digits than any registry will reach, and far below the 4,300 at which
# int() raises: a path segment is checked for length before it is converted.
MAX_VERSION_DIGITS = 18
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")


def _check(kind: str, value: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidNameError(kind, str(value), "it is empty")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidNameError(
            kind, value, f"{len(value)} characters, at most {MAX_NAME_LENGTH}"
        )
    if not _NAME.fullmatch(value):
        raise InvalidNameError(
            kind,
            value,
            "use lowercase letters, digits, '-', '_' and '.', "
            "starting with a letter or digit",
        )
    return value


def validate_model_name(name: str) -> str:
    """Return ``name`` if it is a valid model name, else raise InvalidNameError."""
    return _check("model", name)


def validate_alias_name(alias: str) -> str:
    """Like model names, and never all digits: it must not look like a version."""
    _check("alias", alias)
    if alias.isdigit():
        raise InvalidNameError(
            "alias", alias, "all digits, so it would read as a version number"
        )
    return alias


def parse_version(value: str | int) -> int:
    """A version is a positive integer of at most MAX_VERSION_DIGITS digits; '3'
    and 3 both give 3. InvalidNameError otherwise."""
    text = str(value).strip()
    if len(text) > MAX_VERSION_DIGITS:
        raise InvalidNameError(
            "version",
            text[:20] + "...",
            f"{len(text)} characters, a version has at most "
            f"{MAX_VERSION_DIGITS} digits",
        )
    if not _is_ascii_number(text) or int(text) < 1 or text.startswith("0"):
        raise InvalidNameError("version", text, "a version is a positive integer")
    return int(text)


def is_version(value: str) -> bool:
    """True when ``value`` reads as a version number rather than an alias."""
    return _is_ascii_number(value)


def _is_ascii_number(text: str) -> bool:
    # isdigit() alone accepts '\u00b2' (int() refuses it) and '\u0661' (int() reads 1).
    return text.isascii() and text.isdigit()
