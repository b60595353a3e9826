"""A tampered or truncated artifact is refused and never cached."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from chalicelib.errors import ModelIntegrityError
from chalicelib.models import ModelCache, sha256_hex
from chalicelib.registry import Registry
from chalicelib.version_manifest import Manifest
from tests.conftest import MODEL_BUCKET, model_bytes

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

IRIS_V1 = model_bytes("iris-v1.onnx")
ARTIFACT = "models/iris/versions/1/model.onnx"


@pytest.fixture
def manifest(registry: Registry) -> Manifest:
    return registry.register("iris", IRIS_V1)


def replace_artifact(s3: S3Client, data: bytes) -> None:
    """Overwrite the artifact behind the registry's back."""
    s3.put_object(Bucket=MODEL_BUCKET, Key=ARTIFACT, Body=data)


def tampered(data: bytes) -> bytes:
    """The same size, one byte changed (a flipped bit inside a weight)."""
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


def test_a_tampered_artifact_is_refused(
    registry: Registry, manifest: Manifest, s3: S3Client, tmp_path: Path
) -> None:
    changed = tampered(IRIS_V1)
    replace_artifact(s3, changed)
    cache = ModelCache(registry.fetch_artifact, str(tmp_path / "cache"), 10**9)
    with pytest.raises(ModelIntegrityError) as caught:
        cache.get(manifest)
    assert str(caught.value) == (
        "version 1 of 'iris' failed its integrity check: artifact sha256 is "
        f"{sha256_hex(changed)}, manifest says {manifest.sha256}"
    )
    assert cache.cached() == []
    assert not (tmp_path / "cache").exists()


def test_a_truncated_artifact_is_refused(
    registry: Registry, manifest: Manifest, s3: S3Client, tmp_path: Path
) -> None:
    replace_artifact(s3, IRIS_V1[:-10])
    cache = ModelCache(registry.fetch_artifact, str(tmp_path / "cache"), 10**9)
    with pytest.raises(ModelIntegrityError) as caught:
        cache.get(manifest)
    assert str(caught.value) == (
        "version 1 of 'iris' failed its integrity check: artifact is 680 bytes, "
        "manifest says 690"
    )
    assert cache.cached() == []
    assert not (tmp_path / "cache").exists()


def test_another_valid_model_in_its_place_is_refused(
    registry: Registry, manifest: Manifest, s3: S3Client, tmp_path: Path
) -> None:
    replace_artifact(s3, model_bytes("iris-v2.onnx"))
    cache = ModelCache(registry.fetch_artifact, str(tmp_path), 10**9)
    with pytest.raises(ModelIntegrityError) as caught:
        cache.get(manifest)
    assert str(caught.value) == (
        "version 1 of 'iris' failed its integrity check: artifact is 37845 bytes, "
        "manifest says 690"
    )
    assert cache.cached() == []
    assert list(tmp_path.iterdir()) == []


def test_a_refusal_is_not_remembered_once_the_artifact_is_restored(
    registry: Registry, manifest: Manifest, s3: S3Client, tmp_path: Path
) -> None:
    replace_artifact(s3, tampered(IRIS_V1))
    cache = ModelCache(registry.fetch_artifact, str(tmp_path), 10**9)
    with pytest.raises(ModelIntegrityError):
        cache.get(manifest)
    replace_artifact(s3, IRIS_V1)
    assert cache.get(manifest).manifest == manifest
    assert cache.cached() == [("iris", 1)]
    assert [path.name for path in tmp_path.iterdir()] == [f"{manifest.sha256}.onnx"]
