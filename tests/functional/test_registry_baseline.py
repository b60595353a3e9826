"""A version's training baseline in the registry: stored with the version before
its manifest, checked against the sha256 the manifest records, set once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from chalicelib import layout
from chalicelib.errors import ModelIntegrityError, VersionNotFoundError
from chalicelib.evidence.baseline import Baseline, compute_baseline
from chalicelib.registry.versions import Registry
from chalicelib.sessions import sha256_hex
from tests.demo_support import MODEL_BUCKET, model_bytes

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

BASELINE = compute_baseline(
    np.arange(40.0).reshape(10, 4),
    ["a", "b", "c", "d"],
    ["numeric"] * 4,
    ["x", "y"] * 5,
)


def stored(s3: S3Client, key: str) -> bytes:
    body: bytes = s3.get_object(Bucket=MODEL_BUCKET, Key=key)["Body"].read()
    return body


def test_the_baseline_is_written_before_the_manifest_which_records_its_sha256(
    registry: Registry, s3: S3Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[str] = []
    put = s3.put_object

    def recording(**arguments: Any) -> Any:
        written.append(arguments["Key"].rsplit("/", 1)[-1])
        return put(**arguments)

    monkeypatch.setattr(s3, "put_object", recording)
    manifest = registry.register(
        "iris",
        model_bytes("iris-v1.onnx"),
        baseline=BASELINE,
        provenance={"framework": "onnx"},
    )
    assert written == ["claim.json", "model.onnx", "baseline.json", "manifest.json"]
    data = stored(s3, layout.baseline_key("iris", 1))
    assert manifest.baseline_sha256 == sha256_hex(data)
    assert registry.get_manifest("iris", 1) == manifest
    assert registry.get_baseline("iris", 1) == BASELINE
    assert Baseline.from_json(BASELINE.to_json()) == BASELINE


def test_a_changed_or_missing_baseline_is_an_integrity_failure(
    registry: Registry, s3: S3Client
) -> None:
    registry.register("iris", model_bytes("iris-v1.onnx"), baseline=BASELINE)
    key = layout.baseline_key("iris", 1)
    s3.put_object(Bucket=MODEL_BUCKET, Key=key, Body=stored(s3, key) + b" ")
    with pytest.raises(ModelIntegrityError) as changed:
        registry.get_baseline("iris", 1)
    assert str(changed.value) == (
        "version 1 of 'iris' failed its integrity check: baseline.json does not "
        "match its sha256"
    )
    s3.delete_object(Bucket=MODEL_BUCKET, Key=key)
    with pytest.raises(ModelIntegrityError, match=r"baseline\.json is missing"):
        registry.get_baseline("iris", 1)


def test_a_baseline_cannot_be_set_for_a_version_that_does_not_exist(
    registry: Registry,
) -> None:
    registry.register("iris", model_bytes("iris-v1.onnx"))
    with pytest.raises(VersionNotFoundError):
        registry.set_baseline("iris", 2, BASELINE)
