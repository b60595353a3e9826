"""Shared fixtures: fake AWS credentials, moto, a registry with the demo models."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
import chalice.test
import pytest
from chalice.local import LambdaContext
from moto import mock_aws

from chalicelib.aliases.store import AliasStore
from chalicelib.registry.versions import Registry
from tests.demo_support import BATCH_BUCKET, MODEL_BUCKET, ROOT, model_bytes

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Hermetic: never reach a real AWS account, whatever the developer's shell has.
for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(variable, None)
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/e2e (real HTTP, child processes) carry the ``e2e``
    marker, as does any other module that starts servers or child processes
    (``pytestmark = pytest.mark.e2e``): ``make test-fast`` leaves them out,
    ``make test`` runs all."""
    e2e = ROOT / "tests" / "e2e"
    for item in items:
        if e2e in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def deployed_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give every ``chalice.test`` invocation 900 s to live, as a deployed batch
    function has (its stage's ``lambda_timeout``), not chalice.test's 3 s."""
    monkeypatch.setattr(
        chalice.test,
        "LambdaContext",
        functools.partial(LambdaContext, max_runtime_ms=900_000),
    )


@pytest.fixture
def atomic_s3_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make moto handle one S3 request at a time, atomically, as S3 does.

    moto 5.2.5 checks ``IfNoneMatch`` / ``IfMatch`` and then writes, so two
    threads can both pass the check and the second write silently wins; and an
    overwrite closes the old object's buffer while another thread may be reading
    it. Without this, the race tests would test moto's thread safety, not Turnout.
    """
    from moto.s3.responses import S3Response

    lock = threading.RLock()  # a key request may dispatch to a bucket request

    def serialised(handler: Any) -> Any:
        def handle(self: S3Response, *args: Any, **kwargs: Any) -> Any:
            with lock:
                return handler(self, *args, **kwargs)

        return handle

    for name in ("bucket_response", "key_response"):
        monkeypatch.setattr(S3Response, name, serialised(getattr(S3Response, name)))


@pytest.fixture
def s3(atomic_s3_requests: None) -> Iterator[S3Client]:
    """An S3 client on a fresh in-process moto backend, with both buckets."""
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=MODEL_BUCKET)
        client.create_bucket(Bucket=BATCH_BUCKET)
        yield client


@pytest.fixture
def registry(s3: S3Client) -> Registry:
    return Registry(s3, MODEL_BUCKET, max_model_bytes=1024 * 1024)


@pytest.fixture
def aliases(registry: Registry) -> AliasStore:
    return AliasStore(registry)


@pytest.fixture
def demo_registry(registry: Registry, aliases: AliasStore) -> Registry:
    """iris v1 (logistic regression), iris v2 (gradient boosting), diabetes v1;
    aliases iris@prod = {1: 90, 2: 10} and diabetes@prod = {1: 100}."""
    registry.register("iris", model_bytes("iris-v1.onnx"), description="logistic")
    registry.register("iris", model_bytes("iris-v2.onnx"), description="boosting")
    registry.register("diabetes", model_bytes("diabetes.onnx"))
    aliases.set_routing("iris", "prod", {1: 90, 2: 10}, actor="tests")
    aliases.set_routing("diabetes", "prod", {1: 100}, actor="tests")
    return registry
