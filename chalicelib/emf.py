"""CloudWatch metrics in Embedded Metric Format (EMF), in the one line each
request, shadow run and batch file writes to the function's log.

On Lambda, stdout goes to CloudWatch Logs, which extracts the metrics of every
line shaped as the EMF specification says: an ``_aws`` member naming the
namespace, the dimension sets and the metrics, and the values as root members.
The same line carries what the prediction log always carried (request id,
status, outcome, routing-key hash, error), so there is one write per request.

Namespace ``Turnout``; root keys ``Model``, ``Version`` and ``Alias``, with the
dimension sets ``[Model, Version]``, ``[Model, Alias]`` and ``[Model, Alias,
Version]`` (the last two only when an alias chose the version). A request that
no version answered (an unknown model, a bad name) is counted without
dimensions: the model name comes from the caller and would otherwise mint a
metric for any string.

The lines are written here rather than with a library: Powertools' Metrics cost
four times this per request and put all dimensions in one set, and
aws-embedded-metrics imports aiohttp (200 ms of cold start); see docs/operations.md.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO

import numpy as np

from chalicelib.background import BackgroundWork
from chalicelib.observe import BATCH, CLIENT_ERROR, SERVER_ERROR, SHADOW, Observation

NAMESPACE = "Turnout"
# Distinct predicted-class metrics per model version and container: a model
# with more classes has the rest counted as "Predicted_other".
MAX_CLASS_METRICS = 20
OTHER_CLASS = "other"
# How long a label may be in a metric name.
MAX_LABEL_CHARS = 64

BY_VERSION = ("Model", "Version")
BY_ALIAS = ("Model", "Alias")
# Labels belong to a model (the version that answered is known only at the join).
BY_MODEL = ("Model",)
# Each version's share of one alias: what a canary is compared by.
BY_ALIAS_VERSION = ("Model", "Alias", "Version")

# (name, unit) of the metrics every prediction request carries, in line order.
REQUEST_METRICS = (
    ("Requests", "Count"),
    ("Rows", "Count"),
    ("Latency", "Milliseconds"),
    ("ModelLatency", "Milliseconds"),
    ("ClientErrors", "Count"),
    ("ServerErrors", "Count"),
)

# The request line, filled in by %-formatting: a fraction of json.dumps on a
# dict, on a path that takes tens of microseconds. Strings are quoted with
# json.dumps and None is written as null.
_REQUEST_LINE = (
    '{"_aws":{"Timestamp":%d,"CloudWatchMetrics":[%s]},%s'
    '"Requests":1,"Rows":%d,"Latency":%.3f,"ModelLatency":%.3f,'
    '"ClientErrors":%d,"ServerErrors":%d,%s'
    '"event":"prediction","source":"rest","request_id":%s,"status":%s,'
    '"outcome":%s,"routing_key_hash":%s,"shadow_version":%s,"error":%s}\n'
)


def _json(value: object) -> str:
    return "null" if value is None else json.dumps(value)


def directive(
    dimension_sets: Iterable[Iterable[str]], metrics: Iterable[tuple[str, str]]
) -> dict[str, Any]:
    """One MetricDirective: the namespace, the dimension sets and the metrics'
    names and units."""
    return {
        "Namespace": NAMESPACE,
        "Dimensions": [list(keys) for keys in dimension_sets],
        "Metrics": [{"Name": name, "Unit": unit} for name, unit in metrics],
    }


def dimensions(
    observation: Observation,
) -> tuple[tuple[tuple[str, ...], ...], dict[str, str]]:
    """The dimension sets of an observation and their root members."""
    if observation.version is None:
        return ((),), {}
    members = {"Model": observation.model, "Version": str(observation.version)}
    if observation.alias is None:
        return (BY_VERSION,), members
    members["Alias"] = observation.alias
    return (BY_VERSION, BY_ALIAS, BY_ALIAS_VERSION), members


class MetricsLog:
    """The observer that writes one EMF line per observation to ``stream``
    (stdout when None, looked up at each write as Lambda's runtime sees it),
    timestamped by ``wall_clock`` (seconds since the epoch).

    With ``work`` that is deferred (on Lambda), the line is built and written
    after the response, by the extension; elsewhere it is written at once.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
        work: BackgroundWork | None = None,
    ) -> None:
        self._stream = stream
        self._wall_clock = wall_clock
        self._deferred = work if work is not None and work.deferred else None
        self._directives: dict[tuple[Any, ...], str] = {}
        self._classes: dict[tuple[str, int], set[str]] = {}

    def observe(self, observation: Observation) -> None:
        """Write the observation's line (one write, then a flush), now or, on
        Lambda, once the response is posted."""
        timestamp = int(self._wall_clock() * 1000)
        if self._deferred is None:
            self.write(self.line(observation, timestamp))
        else:
            self._deferred.submit(
                functools.partial(self._write_line, observation, timestamp)
            )

    def _write_line(self, observation: Observation, timestamp: int) -> None:
        self.write(self.line(observation, timestamp))

    def write(self, line: str) -> None:
        stream = self._stream or sys.stdout
        stream.write(line)
        stream.flush()

    def line(self, observation: Observation, timestamp: int) -> str:
        """The observation's EMF line, newline-terminated; ``timestamp`` in
        milliseconds since the epoch."""
        if observation.source == SHADOW:
            return self._shadow_line(observation, timestamp)
        if observation.source == BATCH:
            return self._batch_line(observation, timestamp)
        return self._request_line(observation, timestamp)

    def capture_failed(self, model: str, alias: str, records: int, error: str) -> None:
        """Write the line that counts a capture write S3 refused, and the
        records it held."""
        self._count(
            (BY_ALIAS,),
            {"Model": model, "Alias": alias},
            [("CaptureErrors", "Count", 1), ("CaptureRecordsLost", "Count", records)],
            {"event": "capture_failed", "error": error},
        )

    def capture_late(self, model: str, alias: str, records: int) -> None:
        """Write the line that counts captured requests written to S3 more than
        TURNOUT_CAPTURE_FLUSH_SECONDS after their answer."""
        self._count(
            (BY_ALIAS,),
            {"Model": model, "Alias": alias},
            [("CaptureRecordsLate", "Count", records)],
            {"event": "capture_late"},
        )

    def feedback_failed(self, model: str, records: int, error: str) -> None:
        """Write the line that counts a label write S3 refused, and its labels."""
        self._count(
            (BY_MODEL,),
            {"Model": model},
            [("FeedbackErrors", "Count", 1), ("FeedbackRecordsLost", "Count", records)],
            {"event": "feedback_failed", "error": error},
        )

    def feedback_late(self, model: str, records: int) -> None:
        """Write the line that counts labels written to S3 more than
        TURNOUT_CAPTURE_FLUSH_SECONDS after they were accepted."""
        self._count(
            (BY_MODEL,),
            {"Model": model},
            [("FeedbackRecordsLate", "Count", records)],
            {"event": "feedback_late"},
        )

    def _count(
        self,
        sets: Iterable[Iterable[str]],
        members: Mapping[str, str],
        metrics: list[tuple[str, str, float]],
        fields: Mapping[str, Any],
    ) -> None:
        timestamp = int(self._wall_clock() * 1000)
        self.write(self._document(sets, members, metrics, fields, timestamp))

    # -- requests: the hot path ----------------------------------------------------

    def _request_line(self, observation: Observation, timestamp: int) -> str:
        sets, members = dimensions(observation)
        classes = self._class_counts(observation)
        key = (sets, tuple(classes))
        cached = self._directives.get(key)
        if cached is None:
            metrics = REQUEST_METRICS + tuple(
                (f"Predicted_{label}", "Count") for label in classes
            )
            cached = json.dumps(directive(sets, metrics), separators=(",", ":"))
            self._directives[key] = cached
        outcome = observation.outcome
        return _REQUEST_LINE % (
            timestamp,
            cached,
            "".join(f"{json.dumps(k)}:{json.dumps(v)}," for k, v in members.items())
            if members
            else f'"Model":{_json(observation.model)},',
            observation.rows,
            observation.latency_ms,
            observation.model_ms,
            outcome == CLIENT_ERROR,
            outcome == SERVER_ERROR,
            "".join(
                f"{json.dumps('Predicted_' + label)}:{count},"
                for label, count in classes.items()
            ),
            _json(observation.request_id),
            _json(observation.status),
            _json(outcome),
            _json(observation.routing_key_hash),
            _json(observation.shadow_version),
            _json(observation.error),
        )

    def _class_counts(self, observation: Observation) -> dict[str, int]:
        """Predicted labels and how many rows got each, the label set bounded per
        version (MAX_CLASS_METRICS, the rest as OTHER_CLASS)."""
        labels = observation.labels
        if labels is None or not labels.size or observation.version is None:
            return {}
        if labels.size == 1:
            counted = {_label(labels.flat[0]): 1}
        else:
            values, counts = np.unique(labels, return_counts=True)
            counted = {_label(v): int(c) for v, c in zip(values, counts, strict=True)}
        known = self._classes.setdefault(
            (observation.model, observation.version), set()
        )
        result: dict[str, int] = {}
        for label, count in counted.items():
            if label not in known:
                if len(known) >= MAX_CLASS_METRICS:
                    label = OTHER_CLASS
                else:
                    known.add(label)
            result[label] = result.get(label, 0) + count
        return dict(sorted(result.items()))

    # -- shadow runs and batch files ---------------------------------------------

    def _shadow_line(self, observation: Observation, timestamp: int) -> str:
        sets, members = dimensions(observation)
        failed = observation.outcome != "ok"
        metrics: list[tuple[str, str, float]] = [
            ("ShadowRuns", "Count", 1),
            ("ShadowLatency", "Milliseconds", round(observation.latency_ms, 3)),
            ("ShadowErrors", "Count", int(failed)),
        ]
        if observation.agreement is not None:
            disagreement = round((1.0 - observation.agreement) * 100.0, 3)
            metrics.append(("ShadowDisagreement", "Percent", disagreement))
        return self._document(
            sets,
            members,
            metrics,
            {
                "event": "shadow",
                "source": SHADOW,
                "request_id": observation.request_id,
                "primary_version": observation.primary_version,
                "rows": observation.rows,
                "outcome": observation.outcome,
                "error": observation.error,
            },
            timestamp,
        )

    def _batch_line(self, observation: Observation, timestamp: int) -> str:
        sets, members = dimensions(observation)
        return self._document(
            sets,
            members or {"Model": observation.model},
            [
                ("BatchFiles", "Count", 1),
                ("BatchRowsRead", "Count", observation.rows),
                ("BatchRowsPredicted", "Count", observation.rows_predicted),
                ("BatchRowsRejected", "Count", observation.rows_rejected),
                ("BatchSeconds", "Seconds", round(observation.latency_ms / 1000.0, 3)),
                ("BatchFailures", "Count", int(observation.outcome != "ok")),
            ],
            {
                "event": "batch",
                "source": BATCH,
                "request_id": observation.request_id,
                "status": observation.status,
                "outcome": observation.outcome,
                "error": observation.error,
            },
            timestamp,
        )

    def _document(
        self,
        sets: Iterable[Iterable[str]],
        members: Mapping[str, str],
        metrics: list[tuple[str, str, float]],
        fields: Mapping[str, Any],
        timestamp: int,
    ) -> str:
        document = {
            "_aws": {
                "Timestamp": timestamp,
                "CloudWatchMetrics": [
                    directive(sets, [(name, unit) for name, unit, _ in metrics])
                ],
            },
            **members,
            **{name: value for name, _, value in metrics},
            **fields,
        }
        return json.dumps(document, separators=(",", ":")) + "\n"


def _label(value: object) -> str:
    """A predicted label as it appears in a metric name."""
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    elif isinstance(value, np.generic):
        value = value.item()
    return str(value)[:MAX_LABEL_CHARS]
