"""The time a batch invocation (a whole file, or one shard of it) may work."""

from __future__ import annotations

import time
from collections.abc import Callable

from chalicelib.config import Settings
from chalicelib.errors import BatchStartedTooLateError, BatchTimeLimitError


class Deadline:
    """Stops work a safety margin before the function's time limit.

    The margin is a share of the time the function had when the work started, at
    most ``batch_safety_seconds``, so that a short timeout (or chalice.test's 3 s)
    still leaves time to work.
    """

    def __init__(self, seconds_left: Callable[[], float], settings: Settings) -> None:
        self.seconds_left = seconds_left
        self.started = time.monotonic()
        self.seconds_at_start = max(0.0, seconds_left())
        self.safety_seconds = min(
            settings.batch_safety_seconds,
            settings.batch_safety_fraction * self.seconds_at_start,
        )

    def elapsed(self) -> float:
        """Seconds since the work started."""
        return time.monotonic() - self.started

    def check(self, bytes_done: int, bytes_total: int, rows: int) -> None:
        """BatchTimeLimitError once within the safety margin of the time limit;
        BatchStartedTooLateError when that is before any byte is read."""
        if self.seconds_left() > self.safety_seconds:
            return
        if not bytes_done:
            raise BatchStartedTooLateError(self.elapsed(), self.seconds_at_start)
        raise BatchTimeLimitError(self.elapsed(), bytes_done, bytes_total, rows)
