"""A batch job on a version whose manifest is corrupt fails for good, with a final
manifest: redelivering the event would only repeat the failure."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.demo_support import MODEL_BUCKET
from tests.functional.batch_support import Batch, csv_text, iris_rows

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def test_a_corrupt_manifest_fails_the_job_without_a_retry(
    batch_app: Batch,
    s3: S3Client,
) -> None:
    key = "models/iris/versions/2/manifest.json"
    s3.put_object(Bucket=MODEL_BUCKET, Key=key, Body=b'{"name": "iris", "vers')
    manifest = batch_app.run("incoming/iris@2/rows.csv", csv_text(iris_rows(3)))
    assert manifest["status"] == "failed"
    assert manifest["retryable"] is False
    assert manifest["error"] == (
        "version 2 of 'iris' failed its integrity check: "
        "manifest.json is not valid JSON"
    )
