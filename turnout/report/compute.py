"""One report, from the buckets to its figures: the alias's weights and the
versions' baselines from the registry, then ``collect`` and ``build_report``."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from chalicelib.aliases.store import AliasStore
from chalicelib.evidence.baseline import Baseline
from chalicelib.layout import version_prefix
from chalicelib.registry.versions import Registry
from turnout.report.collect import collect
from turnout.report.figures import build_report

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

BASELINE = "baseline.json"


def baseline_key(name: str, version: int) -> str:
    """Where helper ``publish`` stores a version's training baseline."""
    return version_prefix(name, version) + BASELINE


def read_baseline(
    s3: S3Client, bucket: str, name: str, version: int
) -> Baseline | None:
    """The training baseline of a version, None when it has none."""
    try:
        body = s3.get_object(Bucket=bucket, Key=baseline_key(name, version))["Body"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    return Baseline.from_json(json.loads(body.read()))


def compute_report(
    s3: S3Client,
    *,
    model_bucket: str,
    capture_bucket: str,
    model: str,
    alias: str,
    since: datetime,
    until: datetime,
) -> dict[str, Any]:
    """The report of ``model``'s ``alias`` over [since, until)."""
    registry = Registry(s3, model_bucket)
    document = AliasStore(registry).get(model, alias)
    weights = {str(version): weight for version, weight in document.weights.items()}
    baselines = {
        str(version): found
        for version in registry.list_versions(model)
        if (found := read_baseline(s3, model_bucket, model, version)) is not None
    }
    collected = collect(s3, capture_bucket, model, alias, since, until, baselines)
    return build_report(
        collected,
        model=model,
        alias=alias,
        since=since,
        until=until,
        weights=weights,
        baselines=baselines,
    )
