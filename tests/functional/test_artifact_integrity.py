"""A tampered or truncated artifact is refused and never cached."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from chalicelib.errors import ModelIntegrityError
from chalicelib.registry.manifest import Manifest, TensorSpec
from chalicelib.registry.versions import Registry
from chalicelib.sessions import ModelCache, sha256_hex
from tests.demo_support import MODEL_BUCKET, artifact_files, model_bytes

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
    cache = ModelCache(
        registry.fetch_artifact, artifact_files(tmp_path / "cache"), 10**9
    )
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
    cache = ModelCache(
        registry.fetch_artifact, artifact_files(tmp_path / "cache"), 10**9
    )
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
    cache = ModelCache(registry.fetch_artifact, artifact_files(tmp_path), 10**9)
    with pytest.raises(ModelIntegrityError) as caught:
        cache.get(manifest)
    assert str(caught.value) == (
        "version 1 of 'iris' failed its integrity check: artifact is 37845 bytes, "
        "manifest says 690"
    )
    assert cache.cached() == []
    assert list(tmp_path.iterdir()) == []


class CountingFetch:
    """The registry's fetch, counting its calls."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.calls = 0

    def __call__(self, manifest: Manifest) -> bytes:
        self.calls += 1
        return self.registry.fetch_artifact(manifest)


def test_a_refusal_is_remembered_for_a_while_without_downloading_again(
    registry: Registry, manifest: Manifest, s3: S3Client, tmp_path: Path
) -> None:
    replace_artifact(s3, tampered(IRIS_V1))
    fetch = CountingFetch(registry)
    now = [0.0]
    cache = ModelCache(
        fetch, artifact_files(tmp_path), 10**9, failure_seconds=60, clock=lambda: now[0]
    )
    with pytest.raises(ModelIntegrityError) as first:
        cache.get(manifest)
    replace_artifact(s3, IRIS_V1)  # restored, but not looked at yet
    now[0] = 59.9
    with pytest.raises(ModelIntegrityError) as again:
        cache.get(manifest)
    assert str(again.value) == str(first.value)
    assert fetch.calls == 1
    now[0] = 60.0
    assert cache.get(manifest).manifest == manifest
    assert fetch.calls == 2
    assert cache.cached() == [("iris", 1)]
    assert [path.name for path in tmp_path.iterdir()] == [f"{manifest.sha256}.onnx"]


def test_a_remembered_refusal_is_for_that_version_only(
    registry: Registry, manifest: Manifest, s3: S3Client, tmp_path: Path
) -> None:
    second = registry.register("iris", IRIS_V1)
    replace_artifact(s3, tampered(IRIS_V1))
    cache = ModelCache(registry.fetch_artifact, artifact_files(tmp_path), 10**9)
    with pytest.raises(ModelIntegrityError):
        cache.get(manifest)
    assert cache.get(second).manifest.version == 2
    with pytest.raises(ModelIntegrityError):
        cache.get(manifest)


def edited(manifest: Manifest, **changes: tuple[TensorSpec, ...]) -> Manifest:
    return replace(manifest, signature=replace(manifest.signature, **changes))


def test_a_signature_edited_in_the_manifest_is_refused(
    registry: Registry, manifest: Manifest, tmp_path: Path
) -> None:
    (spec,) = manifest.inputs
    wider = edited(manifest, inputs=(replace(spec, shape=(-1, 5)),))
    cache = ModelCache(registry.fetch_artifact, artifact_files(tmp_path), 10**9)
    with pytest.raises(ModelIntegrityError) as caught:
        cache.get(wider)
    assert str(caught.value) == (
        "version 1 of 'iris' failed its integrity check: the manifest's input "
        "'float_input' FP32 [-1, 5] differs from the model's 'float_input' FP32 "
        "[-1, 4]"
    )
    assert cache.cached() == []


def test_a_manifest_without_an_output_is_refused_even_from_the_file_cache(
    registry: Registry, manifest: Manifest, tmp_path: Path
) -> None:
    ModelCache(registry.fetch_artifact, artifact_files(tmp_path), 10**9).get(manifest)
    fewer = edited(manifest, outputs=manifest.outputs[:1])
    cache = ModelCache(registry.fetch_artifact, artifact_files(tmp_path), 10**9)
    with pytest.raises(ModelIntegrityError) as caught:
        cache.get(fewer)
    assert str(caught.value) == (
        "version 1 of 'iris' failed its integrity check: the manifest lists 1 "
        "outputs, the model has 2"
    )
