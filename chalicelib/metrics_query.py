"""How each version of a model behaved, read back from CloudWatch.

What ``turnout metrics`` prints: per version, over a recent window, the
requests, the error rate, the latency (mean, and p50/p99 where the metrics
source computes percentiles: CloudWatch does, moto does not) and the shadow
runs' agreement with the versions they shadowed. Everything comes from
``GetMetricData`` on the metrics the EMF lines publish (``chalicelib.emf``), so
it reads AWS and the dev stack's moto server alike.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from chalicelib.emf import NAMESPACE

_DURATION = re.compile(r"^([0-9]+)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

# (query id, metric, statistic) read for every version.
_SUMMARY = (
    ("requests", "Requests", "Sum"),
    ("client_errors", "ClientErrors", "Sum"),
    ("server_errors", "ServerErrors", "Sum"),
    ("latency_sum", "Latency", "Sum"),
    ("latency_count", "Latency", "SampleCount"),
    ("shadow_runs", "ShadowRuns", "Sum"),
    ("disagreement_sum", "ShadowDisagreement", "Sum"),
    ("disagreement_count", "ShadowDisagreement", "SampleCount"),
)
_PERCENTILES = (("p50", "Latency", "p50"), ("p99", "Latency", "p99"))


def parse_since(text: str) -> timedelta:
    """'90s', '30m', '12h', '1d', '2w' -> the duration; ValueError otherwise."""
    match = _DURATION.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration like 30m, 12h, 1d or 2w")
    return timedelta(seconds=int(match.group(1)) * _SECONDS[match.group(2)])


@dataclass(frozen=True)
class VersionMetrics:
    """One version's figures over the window; None where nothing was measured."""

    version: int
    requests: int
    error_rate: float | None
    latency_mean_ms: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    shadow_runs: int
    shadow_agreement: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def versions_with_metrics(cloudwatch: Any, name: str, alias: str | None) -> list[int]:
    """The versions of ``name`` (under ``alias`` when given) that have metrics."""
    wanted = {"Model", "Version"} | ({"Alias"} if alias else set())
    dimensions = [{"Name": "Model", "Value": name}]
    if alias:
        dimensions.append({"Name": "Alias", "Value": alias})
    versions: set[int] = set()
    paginator = cloudwatch.get_paginator("list_metrics")
    for metric_name in ("Requests", "ShadowRuns"):
        for page in paginator.paginate(
            Namespace=NAMESPACE, MetricName=metric_name, Dimensions=dimensions
        ):
            for metric in page["Metrics"]:
                found = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
                if set(found) == wanted and found["Version"].isdigit():
                    versions.add(int(found["Version"]))
    return sorted(versions)


def version_metrics(
    cloudwatch: Any,
    name: str,
    *,
    alias: str | None,
    since: timedelta,
    now: datetime,
) -> list[VersionMetrics]:
    """Each version's figures over the ``since`` before ``now``."""
    versions = versions_with_metrics(cloudwatch, name, alias)
    if not versions:
        return []
    # One period for the whole window (whole minutes, as CloudWatch wants).
    period = max(60, math.ceil(since.total_seconds() / 60) * 60)
    # Up to the next whole minute: CloudWatch reads times to the second, and a
    # datum written this second must fall inside the window.
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    window = {"StartTime": end - since, "EndTime": end}

    def queries(stats: Sequence[tuple[str, str, str]]) -> list[dict[str, Any]]:
        return [
            {
                "Id": f"{key}_{version}",
                "MetricStat": {
                    "Metric": {
                        "Namespace": NAMESPACE,
                        "MetricName": metric,
                        "Dimensions": _dimensions(name, alias, version),
                    },
                    "Period": period,
                    "Stat": stat,
                },
            }
            for version in versions
            for key, metric, stat in stats
        ]

    values = _values(cloudwatch, queries(_SUMMARY), window)
    # Percentiles are asked for apart: a source that cannot compute them fails
    # the query (moto's server with a 500, its in-process mock with a TypeError),
    # and the mean stands alone.
    with contextlib.suppress(Exception):
        values |= _values(cloudwatch, queries(_PERCENTILES), window)
    return [_figures(version, values) for version in versions]


def _dimensions(name: str, alias: str | None, version: int) -> list[dict[str, str]]:
    found = [{"Name": "Model", "Value": name}]
    if alias:
        found.append({"Name": "Alias", "Value": alias})
    return [*found, {"Name": "Version", "Value": str(version)}]


def _values(
    cloudwatch: Any, queries: list[dict[str, Any]], window: Mapping[str, datetime]
) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    paginator = cloudwatch.get_paginator("get_metric_data")
    for start in range(0, len(queries), 500):  # GetMetricData takes 500 queries
        for page in paginator.paginate(
            MetricDataQueries=queries[start : start + 500], **window
        ):
            for result in page["MetricDataResults"]:
                found.setdefault(result["Id"], []).extend(result["Values"])
    return found


def _figures(version: int, values: Mapping[str, list[float]]) -> VersionMetrics:
    def total(key: str) -> float:
        return sum(values.get(f"{key}_{version}", []))

    def ratio(numerator: float, denominator: float) -> float | None:
        return numerator / denominator if denominator else None

    def percentile(key: str) -> float | None:
        # Several periods' percentiles cannot be combined: the highest stands.
        found = values.get(f"{key}_{version}")
        return max(found) if found else None

    requests = total("requests")
    disagreement = ratio(total("disagreement_sum"), total("disagreement_count"))
    return VersionMetrics(
        version=version,
        requests=int(requests),
        error_rate=ratio(total("client_errors") + total("server_errors"), requests),
        latency_mean_ms=ratio(total("latency_sum"), total("latency_count")),
        latency_p50_ms=percentile("p50"),
        latency_p99_ms=percentile("p99"),
        shadow_runs=int(total("shadow_runs")),
        shadow_agreement=None if disagreement is None else 100.0 - disagreement,
    )
