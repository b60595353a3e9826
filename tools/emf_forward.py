"""The dev stack's CloudWatch Logs: EMF lines become real CloudWatch metrics.

On AWS, CloudWatch Logs reads each function's log and publishes the metrics of
every line in Embedded Metric Format. Here a LogForwarder follows the logs of
``chalice local`` and the event pump (which runs the batch function) and sends
the metrics of each EMF line to the moto server's CloudWatch with
``put_metric_data``, one datum per metric and dimension set, as CloudWatch Logs
does. ``aws cloudwatch get-metric-statistics --namespace Turnout ...`` and
``turnout metrics`` then answer against the dev stack.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

logger = logging.getLogger("turnout.devstack")

# put_metric_data takes at most this many data per call.
MAX_DATA_PER_CALL = 1000


def metric_data(document: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The CloudWatch data an EMF document holds, by namespace: one datum per
    metric and dimension set, with the document's timestamp."""
    metadata = document["_aws"]
    timestamp = datetime.fromtimestamp(metadata["Timestamp"] / 1000.0, UTC)
    data: dict[str, list[dict[str, Any]]] = {}
    for directive in metadata["CloudWatchMetrics"]:
        found = data.setdefault(directive["Namespace"], [])
        for keys in directive["Dimensions"]:
            dimensions = [{"Name": key, "Value": str(document[key])} for key in keys]
            for metric in directive["Metrics"]:
                value = document[metric["Name"]]
                values = value if isinstance(value, list) else [value]
                found += [
                    {
                        "MetricName": metric["Name"],
                        "Dimensions": dimensions,
                        "Value": float(number),
                        "Unit": metric.get("Unit", "None"),
                        "Timestamp": timestamp,
                    }
                    for number in values
                ]
    return data


def emf_document(line: str) -> dict[str, Any] | None:
    """The EMF document a log line is, or None for any other line."""
    text = line.strip()
    if not text.startswith('{"_aws"'):
        return None
    try:
        document: dict[str, Any] = json.loads(text)
    except ValueError:
        return None
    return document


def forward(lines: Iterable[str], cloudwatch: Any) -> int:
    """Publish the metrics of the EMF lines among ``lines``; how many data."""
    sent = 0
    for line in lines:
        document = emf_document(line)
        if document is None:
            continue
        for namespace, data in metric_data(document).items():
            for start in range(0, len(data), MAX_DATA_PER_CALL):
                chunk = data[start : start + MAX_DATA_PER_CALL]
                cloudwatch.put_metric_data(Namespace=namespace, MetricData=chunk)
                sent += len(chunk)
    return sent


class LogForwarder:
    """Follows log files from their start, forwards their EMF lines' metrics to
    ``cloudwatch`` and copies every line to ``echo`` (a terminal) when given.
    ``interval`` is how often the files are read for new lines (seconds)."""

    def __init__(
        self,
        cloudwatch: Any,
        paths: Sequence[Path],
        *,
        echo: TextIO | None = None,
        interval: float = 0.2,
    ) -> None:
        self._cloudwatch = cloudwatch
        self._paths = list(paths)
        self._echo = echo
        self._interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="emf-forwarder", daemon=True
        )

    def start(self) -> LogForwarder:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Forward what is left, then stop."""
        self._stopped.set()
        self._thread.join(10.0)

    def _run(self) -> None:
        with contextlib.ExitStack() as files:
            offsets: dict[Path, tuple[TextIO, str]] = {}
            while True:
                stopping = self._stopped.is_set()
                for path in self._paths:
                    if path not in offsets and path.exists():
                        handle = files.enter_context(path.open(errors="replace"))
                        offsets[path] = (handle, "")
                    if path in offsets:
                        offsets[path] = self._read(*offsets[path])
                if stopping:
                    return
                self._stopped.wait(self._interval)

    def _read(self, handle: TextIO, partial: str) -> tuple[TextIO, str]:
        text = partial + handle.read()
        *lines, rest = text.split("\n")
        if self._echo is not None:
            for line in lines:
                self._echo.write(line + "\n")
            self._echo.flush()
        try:
            forward(lines, self._cloudwatch)
        except Exception:
            logger.exception("could not forward metrics to the moto server")
        return handle, rest
