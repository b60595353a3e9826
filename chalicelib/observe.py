"""What happens after each prediction: one Observation per REST request, shadow
run or batch file, handed to every observer once the outcome is known.

The protocol layers fill an Observation as they learn its parts (the version
that answers, the rows, the model's run time) and close it with the outcome,
so a refusal is still attributed to the version whose signature refused it.
Observers (the metrics line, shadow runs, data capture) never see an HTTP
request or an S3 event, and an observer that fails never fails the prediction
it observes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger("turnout.predictions")

REST, SHADOW, BATCH = "rest", "shadow", "batch"
OK, CLIENT_ERROR, SERVER_ERROR = "ok", "client_error", "server_error"


# Built for every request: a frozen dataclass would cost three times as much.
@dataclass(slots=True)
class Observation:
    """One prediction request (REST), shadow run or batch file, as observers see
    it.

    ``latency_ms`` is the whole request or file, ``model_ms`` the time spent in
    the model itself. ``outcome`` is OK, CLIENT_ERROR or SERVER_ERROR and
    ``status`` the HTTP status (REST) or the job's status (batch). ``inputs``
    and ``outputs`` are the arrays themselves (REST), for observers that keep
    samples of them; None when not kept (batch) or never reached. ``labels``
    are a classifier's predicted labels. A shadow run's ``version`` is the
    shadow's, ``primary_version`` the version it is compared with and
    ``agreement`` the share of rows where they agree. A batch file's ``rows``
    are the rows read, of which ``rows_predicted`` were predicted and
    ``rows_rejected`` went to the error report.
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
    labels: np.ndarray | None = None
    primary_version: int | None = None
    agreement: float | None = None
    rows_predicted: int = 0
    rows_rejected: int = 0
    # The caller's own id for a REST request (V2's ``id``, the ``X-Inference-Id``
    # header of ``instances``), by which its labels may name it.
    caller_id: str | None = None

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


# What a batch job or shard returns when a file has just ended: processed in one
# invocation, assembled from its shards, or failed by a shard.
_FILE_ENDS = frozenset({"processed", "assembled", "failed"})


def observe_batch_file[Result: Mapping[str, Any]](
    observers: Observer | None, result: Result | None
) -> Result | None:
    """Hand a processed batch file to ``observers`` as one BATCH Observation
    built from its final manifest (rows read, predicted and rejected, seconds,
    status), whether one invocation processed it or its last shard assembled or
    failed it; skipped, lost, fanned-out or ignored uploads are not observed. Returns
    ``result`` unchanged, so that the job can return through it."""
    if observers is None or not result or result.get("action") not in _FILE_ENDS:
        return result
    manifest = result["manifest"]
    rows = manifest["rows"]
    status = manifest["status"]
    if status != "failed":
        outcome = OK
    else:
        outcome = SERVER_ERROR if manifest.get("retryable") else CLIENT_ERROR
    observers.observe(
        Observation(
            BATCH,
            manifest["run_id"],
            model=manifest["model"] or "",
            version=manifest["version"],
            alias=manifest["alias"],
            rows=rows["read"],
            rows_predicted=rows["predicted"],
            rows_rejected=rows["rejected"],
            latency_ms=(manifest["seconds"] or 0.0) * 1000.0,
            outcome=outcome,
            status=status,
            error=manifest.get("error"),
        )
    )
    return result
