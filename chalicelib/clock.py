"""The wall clock and how its readings are written into documents.

Classes that stamp documents take a clock as an argument (``utc_now`` by
default), so a test passes a fixed one.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def iso_timestamp(moment: datetime) -> str:
    """``moment`` in UTC as ISO 8601 with milliseconds and a ``Z``:
    ``2026-03-01T12:00:00.000Z``."""
    return (
        moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
