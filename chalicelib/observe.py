"""What happens after each prediction: one Observation per REST request or batch
file, handed to every observer once the outcome is known.

The protocol layers fill an Observation as they learn its parts (the version
that answers, the rows, the model's run time) and close it with the outcome,
so a refusal is still attributed to the version whose signature refused it.
Observers (the prediction log today; metrics and capture next) never see an
HTTP request or an S3 event, and an observer that fails never fails the
prediction it observes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

logger = logging.getLogger("turnout.predictions")

REST, BATCH = "rest", "batch"
OK, CLIENT_ERROR, SERVER_ERROR = "ok", "client_error", "server_error"


# Built for every request: a frozen dataclass would cost three times as much.
@dataclass(slots=True)
class Observation:
    """One prediction request (REST) or one batch file, as observers see it.

    ``latency_ms`` is the whole request or file, ``model_ms`` the time spent in
    the model itself. ``outcome`` is OK, CLIENT_ERROR or SERVER_ERROR and
    ``status`` the HTTP status (REST) or the job's status (batch). ``inputs``
    and ``outputs`` are the arrays themselves (REST), for observers that keep
    samples of them; None when not kept (batch) or never reached.
    """

    source: str
    request_id: str
    model: str = ""
    version: int | None = None
    alias: str | None = None
    routing_key: str | None = None
    shadow_version: int | None = None
    rows: int = 0
    model_ms: float = 0.0
    latency_ms: float = 0.0
    outcome: str = OK
    status: int | str = 200
    error: str | None = None
    inputs: Mapping[str, np.ndarray] | None = None
    outputs: Mapping[str, np.ndarray] | None = None

    @property
    def routing_key_hash(self) -> str | None:
        """A short hash of the routing key: enough to tell callers apart in the
        logs, never the key itself (it may be a user id)."""
        if self.routing_key is None:
            return None
        return hashlib.sha256(self.routing_key.encode()).hexdigest()[:16]


class Observer(Protocol):
    """Anything that wants to know about each prediction."""

    def observe(self, observation: Observation) -> None: ...


class Observers:
    """Hands each observation to every observer; one that raises is logged and
    skipped, so observing never fails a prediction."""

    def __init__(self, observers: Sequence[Observer] = ()) -> None:
        self._observers = tuple(observers)

    def observe(self, observation: Observation) -> None:
        for observer in self._observers:
            try:
                observer.observe(observation)
            except Exception:
                logger.exception(
                    "observer %s failed on request %s",
                    type(observer).__name__,
                    observation.request_id,
                )


# The JSON line logged for each observation. Filled in by %-formatting, which
# costs a fraction of json.dumps on a dict, on a path that takes tens of
# microseconds; strings are quoted with json.dumps and None is written as null.
_RECORD = (
    '{"event": "prediction", "source": %s, "request_id": %s, "model": %s, '
    '"version": %s, "alias": %s, "rows": %d, "status": %s, "outcome": %s, '
    '"latency_ms": %.3f, "model_ms": %.3f, "routing_key_hash": %s, '
    '"shadow_version": %s, "error": %s}'
)


def _json(value: object) -> str:
    return "null" if value is None else json.dumps(value)


class PredictionLog:
    """One JSON line per observation on the ``turnout.predictions`` logger: the
    record that makes every answer attributable to its version."""

    def observe(self, observation: Observation) -> None:
        # Warm requests take tens of microseconds: build the record only if kept.
        if not logger.isEnabledFor(logging.INFO):
            return
        args = (
            _json(observation.source),
            _json(observation.request_id),
            _json(observation.model),
            _json(observation.version),
            _json(observation.alias),
            observation.rows,
            _json(observation.status),
            _json(observation.outcome),
            observation.latency_ms,
            observation.model_ms,
            _json(observation.routing_key_hash),
            _json(observation.shadow_version),
            _json(observation.error),
        )
        # logger.info without its search of the call stack for the caller's line
        # (a third of its cost): records name this module, without a line number.
        level = logging.WARNING if observation.outcome == SERVER_ERROR else logging.INFO
        record = logger.makeRecord(logger.name, level, __file__, 0, _RECORD, args, None)
        logger.handle(record)
