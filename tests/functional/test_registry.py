"""The registry on moto: numbering, manifests, refusals, races, crash safety."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING

import pytest

from chalicelib.aliases.store import AliasStore
from chalicelib.errors import (
    InvalidLabelsError,
    InvalidModelError,
    InvalidNameError,
    ModelNotFoundError,
    ModelTooLargeError,
    TurnoutError,
    VersionNotFoundError,
)
from chalicelib.registry.cache import ManifestCache
from chalicelib.registry.manifest import Signature, TensorSpec
from chalicelib.registry.versions import Registry
from tests.demo_support import MODEL_BUCKET, model_bytes

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

IRIS_V1 = model_bytes("iris-v1.onnx")
IRIS_SIGNATURE = Signature(
    inputs=(TensorSpec("float_input", "FP32", (-1, 4)),),
    outputs=(
        TensorSpec("label", "INT64", (-1,)),
        TensorSpec("probabilities", "FP32", (-1, 3)),
    ),
)
DIABETES_SIGNATURE = Signature(
    inputs=(TensorSpec("float_input", "FP32", (-1, 10)),),
    outputs=(TensorSpec("variable", "FP32", (-1, 1)),),
)


def bucket_keys(s3: S3Client) -> list[str]:
    listing = s3.list_objects_v2(Bucket=MODEL_BUCKET)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def test_versions_are_numbered_1_2_3(registry: Registry) -> None:
    numbers = [registry.register("iris", IRIS_V1).version for _ in range(3)]
    assert numbers == [1, 2, 3]
    assert registry.list_versions("iris") == [1, 2, 3]
    assert registry.latest_manifest("iris").version == 3


def test_each_model_counts_on_its_own(registry: Registry) -> None:
    registry.register("iris", IRIS_V1)
    registry.register("iris", IRIS_V1)
    assert registry.register("diabetes", model_bytes("diabetes.onnx")).version == 1
    assert registry.list_models() == ["diabetes", "iris"]


def test_a_registration_writes_claim_artifact_and_manifest(
    registry: Registry, s3: S3Client
) -> None:
    manifest = registry.register("iris", IRIS_V1)
    prefix = "models/iris/versions/1/"
    assert bucket_keys(s3) == [
        prefix + "claim.json",
        prefix + "manifest.json",
        prefix + "model.onnx",
    ]
    stored = s3.get_object(Bucket=MODEL_BUCKET, Key=prefix + "model.onnx")
    assert stored["Body"].read() == IRIS_V1
    document = s3.get_object(Bucket=MODEL_BUCKET, Key=prefix + "manifest.json")
    assert json.loads(document["Body"].read()) == manifest.to_dict()


def test_the_manifest_describes_the_artifact(s3: S3Client) -> None:
    moment = datetime(2026, 1, 2, 5, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    registry = Registry(s3, MODEL_BUCKET, clock=lambda: moment)
    manifest = registry.register(
        "iris", IRIS_V1, description="logistic", tags={"team": "ml"}
    )
    assert manifest.name == "iris"
    assert manifest.version == 1
    assert manifest.sha256 == hashlib.sha256(IRIS_V1).hexdigest()
    assert manifest.size == len(IRIS_V1) == 690
    assert manifest.created_at == "2026-01-02T03:04:05.678Z"  # always UTC
    assert manifest.description == "logistic"
    assert manifest.tags == {"team": "ml"}
    assert manifest.signature == IRIS_SIGNATURE
    assert manifest.labels == ("setosa", "versicolor", "virginica")  # metadata
    assert manifest.opset == {"ai.onnx": 17, "ai.onnx.ml": 1}
    assert manifest.producer == {"name": "skl2onnx", "version": "1.20.0"}
    assert manifest.ir_version == 8
    assert registry.get_manifest("iris", 1) == manifest


def test_the_real_clock_writes_utc(registry: Registry) -> None:
    before = datetime.now(UTC)
    created = registry.register("iris", IRIS_V1).created_at
    assert created.endswith("Z")
    moment = datetime.fromisoformat(created)
    assert before - timedelta(milliseconds=1) <= moment <= datetime.now(UTC)


def test_a_regressor_has_a_dynamic_batch_and_no_labels(registry: Registry) -> None:
    manifest = registry.register("diabetes", model_bytes("diabetes.onnx"))
    assert manifest.signature == DIABETES_SIGNATURE
    assert manifest.labels is None


def test_given_labels_replace_the_models_own(registry: Registry) -> None:
    manifest = registry.register("iris", IRIS_V1, labels=[" a", "b ", "c"])
    assert manifest.labels == ("a", "b", "c")
    assert registry.get_manifest("iris", 1).labels == ("a", "b", "c")


def test_a_refused_registration_writes_nothing(
    registry: Registry, s3: S3Client
) -> None:
    registry.register("iris", IRIS_V1)
    before = bucket_keys(s3)
    small = Registry(s3, MODEL_BUCKET, max_model_bytes=len(IRIS_V1) - 1)
    refusals: list[tuple[Registry, str, bytes, list[str] | None, type[Exception]]] = [
        (registry, "iris", b"not onnx at all", None, InvalidModelError),
        (registry, "iris", b"", None, InvalidModelError),
        (registry, "Iris", IRIS_V1, None, InvalidNameError),
        (small, "iris", IRIS_V1, None, ModelTooLargeError),
        (registry, "iris", IRIS_V1, ["a", "b"], InvalidLabelsError),
    ]
    for store, name, data, labels, error in refusals:
        with pytest.raises(error):
            store.register(name, data, labels=labels)
    assert bucket_keys(s3) == before
    assert registry.register("iris", IRIS_V1).version == 2  # no number was taken


@pytest.mark.parametrize(
    ("name", "data", "labels", "message"),
    [
        (
            "iris",
            b"not onnx at all",
            None,
            "not a loadable ONNX model: [ONNXRuntimeError] : 7 : INVALID_PROTOBUF : "
            "Failed to load model because protobuf parsing failed.",
        ),
        ("iris", b"", None, "not a loadable ONNX model: the file is empty"),
        (
            "my model",
            IRIS_V1,
            None,
            "invalid model name 'my model': use lowercase letters, digits, '-', '_' "
            "and '.', starting with a letter or digit",
        ),
        (
            "iris",
            IRIS_V1,
            ["a", "b"],
            "invalid labels: 2 labels given, the model's 'probabilities' output "
            "has 3 classes",
        ),
        ("iris", IRIS_V1, ["a", "a", "b"], "invalid labels: labels must be distinct"),
        (
            "iris",
            IRIS_V1,
            ["a", " ", "b"],
            "invalid labels: labels must be a non-empty list of non-empty names",
        ),
        (
            "diabetes",
            model_bytes("diabetes.onnx"),
            ["low", "high"],
            "invalid labels: labels were given but the model has no probabilities "
            "output (a 2-D float tensor) to name",
        ),
    ],
)
def test_each_refusal_says_why(
    registry: Registry,
    s3: S3Client,
    name: str,
    data: bytes,
    labels: list[str] | None,
    message: str,
) -> None:
    with pytest.raises(TurnoutError) as caught:
        registry.register(name, data, labels=labels)
    assert str(caught.value) == message
    assert bucket_keys(s3) == []


def test_a_file_over_the_limit_is_refused(s3: S3Client) -> None:
    registry = Registry(s3, MODEL_BUCKET, max_model_bytes=1000)
    with pytest.raises(ModelTooLargeError) as caught:
        registry.register("iris", model_bytes("iris-v2.onnx"))
    assert str(caught.value) == (
        "model file is 37845 bytes, over the limit of 1000 bytes "
        "(TURNOUT_MAX_MODEL_BYTES)"
    )
    assert bucket_keys(s3) == []
    assert registry.register("iris", IRIS_V1).version == 1  # at the limit is fine


def test_concurrent_registrations_get_distinct_versions(registry: Registry) -> None:
    threads = 8
    start = threading.Barrier(threads)
    got: dict[int, int] = {}
    errors: list[BaseException] = []

    def register(index: int) -> None:
        start.wait()
        try:
            manifest = registry.register("iris", IRIS_V1, description=f"t{index}")
            got[index] = manifest.version
        except BaseException as error:
            errors.append(error)

    workers = [threading.Thread(target=register, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert sorted(got.values()) == list(range(1, threads + 1))
    assert registry.list_versions("iris") == list(range(1, threads + 1))
    for index, version in got.items():  # nobody's manifest was overwritten
        assert registry.get_manifest("iris", version).description == f"t{index}"


def test_a_version_without_its_manifest_does_not_exist(
    registry: Registry, s3: S3Client
) -> None:
    registry.register("iris", IRIS_V1)
    crashed = "models/iris/versions/2/"  # claimed and uploaded, then a crash
    s3.put_object(Bucket=MODEL_BUCKET, Key=crashed + "claim.json", Body=b"{}")
    s3.put_object(Bucket=MODEL_BUCKET, Key=crashed + "model.onnx", Body=IRIS_V1)
    assert registry.list_versions("iris") == [1]
    assert registry.latest_manifest("iris").version == 1
    with pytest.raises(VersionNotFoundError) as caught:
        registry.get_manifest("iris", 2)
    assert str(caught.value) == "model 'iris' has no version 2"
    assert registry.register("iris", IRIS_V1).version == 3
    assert registry.list_versions("iris") == [1, 3]


def test_a_model_with_only_a_crashed_registration_does_not_exist(
    registry: Registry, s3: S3Client
) -> None:
    s3.put_object(
        Bucket=MODEL_BUCKET, Key="models/iris/versions/1/claim.json", Body=b"{}"
    )
    assert registry.list_models() == []
    assert registry.list_versions("iris") == []
    with pytest.raises(ModelNotFoundError) as caught:
        registry.get_manifest("iris", 1)
    assert str(caught.value) == "model 'iris' not found"
    with pytest.raises(ModelNotFoundError):
        registry.latest_manifest("iris")
    assert registry.register("iris", IRIS_V1).version == 2


# -- a warm container's manifests --------------------------------------------------


def test_a_warm_container_stops_serving_a_deleted_version_after_revalidating(
    registry: Registry,
) -> None:
    for _ in range(2):
        registry.register("iris", IRIS_V1)
    now = [0.0]
    manifests = ManifestCache(registry, ttl_seconds=5, clock=lambda: now[0])
    first = manifests.get("iris", 2)
    AliasStore(registry).delete_version("iris", 2)
    now[0] = 4.9
    assert manifests.get("iris", 2) is first  # trusted within the interval
    now[0] = 5.0
    with pytest.raises(VersionNotFoundError) as caught:
        manifests.get("iris", 2)
    assert str(caught.value) == "model 'iris' has no version 2"
    assert manifests.get("iris", 1).version == 1


def test_revalidating_a_live_version_keeps_the_copy(registry: Registry) -> None:
    registry.register("iris", IRIS_V1)
    now = [0.0]
    manifests = ManifestCache(registry, ttl_seconds=5, clock=lambda: now[0])
    first = manifests.get("iris", 1)
    now[0] = 60.0
    assert manifests.get("iris", 1) is first
    registry.write_tombstone("iris", 1, actor="ann")  # a delete that stopped here
    now[0] = 64.9
    assert manifests.get("iris", 1) is first  # revalidated at 60
    now[0] = 65.0
    with pytest.raises(ModelNotFoundError):
        manifests.get("iris", 1)
