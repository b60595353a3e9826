"""Where a rollout's figures come from: per version, over a step's window.

``MetricsSource`` is what the evaluator asks; ``CloudWatchSource`` answers from
the metrics the EMF lines publish (``chalicelib.emf``: ``Requests``,
``ClientErrors``, ``ServerErrors`` and ``Latency`` under the dimensions
``[Model, Alias, Version]``, so only the alias's own requests count) with one
``GetMetricData`` call whose period is the whole window.

Which figures come from where:

- requests and errors: the ``Sum`` of the counts, on AWS and on moto alike;
- latency on AWS: CloudWatch's ``p50`` and ``p99`` over the window;
- latency where the source computes no percentiles (moto's CloudWatch, that of
  ``make dev``): the window's ``Average`` stands for the median and its
  ``Maximum`` for the p99 (an upper bound of it), and ``latency_source`` says
  so in every decision.

Tests use a fake (``tests/rollout_support.py``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from chalicelib.emf import NAMESPACE
from chalicelib.rollout.judge import VersionFigures

PERCENTILES = "CloudWatch p50 and p99"
FALLBACK = "no percentiles here (moto): mean for the median, maximum for the p99"

_COUNTS = (
    ("requests", "Requests", "Sum"),
    ("client", "ClientErrors", "Sum"),
    ("server", "ServerErrors", "Sum"),
    ("mean", "Latency", "Average"),
    ("max", "Latency", "Maximum"),
)
_PERCENTILES = (("p50", "Latency", "p50"), ("p99", "Latency", "p99"))


class MetricsSource(Protocol):
    def figures(
        self,
        name: str,
        alias: str,
        versions: Iterable[int],
        start: datetime,
        end: datetime,
    ) -> dict[int, VersionFigures]:
        """Each version's figures for ``name@alias`` between ``start`` and ``end``."""
        ...


class CloudWatchSource:
    """Figures read with ``GetMetricData`` from ``cloudwatch`` (a boto3 client)."""

    def __init__(self, cloudwatch: Any) -> None:
        self.cloudwatch = cloudwatch

    def figures(
        self,
        name: str,
        alias: str,
        versions: Iterable[int],
        start: datetime,
        end: datetime,
    ) -> dict[int, VersionFigures]:
        wanted = sorted(versions)
        # Up to the next whole minute: a datum written this second must count.
        end = end.replace(second=0, microsecond=0) + timedelta(minutes=1)
        period = max(60, math.ceil((end - start).total_seconds() / 60) * 60)
        window = {"StartTime": start, "EndTime": end}

        def queries(stats: tuple[tuple[str, str, str], ...]) -> list[dict[str, Any]]:
            return [
                {
                    "Id": f"{key}_{version}",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": NAMESPACE,
                            "MetricName": metric,
                            "Dimensions": [
                                {"Name": "Model", "Value": name},
                                {"Name": "Alias", "Value": alias},
                                {"Name": "Version", "Value": str(version)},
                            ],
                        },
                        "Period": period,
                        "Stat": stat,
                    },
                }
                for version in wanted
                for key, metric, stat in stats
            ]

        values = self._values(queries(_COUNTS), window)
        percentiles: dict[str, list[float]] = {}
        # Asked for apart: a source without percentiles fails the query (moto's
        # server with a 500, its in-process mock with a TypeError).
        with contextlib.suppress(Exception):
            percentiles = self._values(queries(_PERCENTILES), window)
        return {
            version: _version_figures(version, values, percentiles)
            for version in wanted
        }

    def _values(
        self, queries: list[dict[str, Any]], window: Mapping[str, datetime]
    ) -> dict[str, list[float]]:
        found: dict[str, list[float]] = {}
        response = self.cloudwatch.get_metric_data(MetricDataQueries=queries, **window)
        for result in response["MetricDataResults"]:
            found.setdefault(result["Id"], []).extend(result["Values"])
        return found


def _version_figures(
    version: int,
    values: Mapping[str, list[float]],
    percentiles: Mapping[str, list[float]],
) -> VersionFigures:
    def total(key: str) -> float:
        return sum(values.get(f"{key}_{version}", []))

    def highest(found: Mapping[str, list[float]], key: str) -> float | None:
        listed = found.get(f"{key}_{version}")
        return max(listed) if listed else None

    p99 = highest(percentiles, "p99")
    measured = p99 is not None
    return VersionFigures(
        version=version,
        requests=int(total("requests")),
        errors=int(total("client") + total("server")),
        latency_p50_ms=highest(percentiles, "p50")
        if measured
        else highest(values, "mean"),
        latency_p99_ms=p99 if measured else highest(values, "max"),
        latency_source=PERCENTILES if measured else FALLBACK,
    )
