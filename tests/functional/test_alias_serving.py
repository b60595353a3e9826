"""Alias heads that carry the manifests they serve, on moto: one read for a cold
container's first request, the fallback for older heads, and deletion still
honoured within the manifest cache's window."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from chalicelib.aliases.cache import AliasCache
from chalicelib.aliases.document import SERVING_METADATA_KEY
from chalicelib.aliases.store import AliasStore
from chalicelib.errors import VersionNotFoundError
from chalicelib.registry.cache import ManifestCache
from chalicelib.registry.manifest import Manifest
from chalicelib.registry.versions import Registry
from tests.demo_support import MODEL_BUCKET, model_bytes

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

HEAD = "models/iris/aliases/prod.json"


class CountingRegistry(Registry):
    """A registry that counts the manifest reads and liveness checks it makes."""

    def __init__(self, s3: S3Client) -> None:
        super().__init__(s3, MODEL_BUCKET)
        self.reads: list[tuple[str, str, int]] = []

    def get_manifest(self, name: str, version: int) -> Manifest:
        self.reads.append(("get_manifest", name, version))
        return super().get_manifest(name, version)

    def is_live(self, name: str, version: int) -> bool:
        self.reads.append(("is_live", name, version))
        return super().is_live(name, version)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def iris(registry: Registry) -> Registry:
    """iris versions 1, 2 and 3, no aliases."""
    for _ in range(3):
        registry.register("iris", model_bytes("iris-v1.onnx"))
    return registry


@pytest.fixture
def store(iris: Registry) -> AliasStore:
    return AliasStore(iris)


def caches(
    s3: S3Client, clock: Clock, seconds: float = 5.0
) -> tuple[AliasCache, ManifestCache, CountingRegistry]:
    """A cold container's alias and manifest caches, both trusting for ``seconds``."""
    registry = CountingRegistry(s3)
    manifests = ManifestCache(registry, seconds, clock=clock)
    aliases = AliasCache(s3, MODEL_BUCKET, seconds, clock=clock, manifests=manifests)
    return aliases, manifests, registry


def carried(s3: S3Client) -> list[int]:
    metadata = s3.get_object(Bucket=MODEL_BUCKET, Key=HEAD)["Metadata"]
    return [item["version"] for item in json.loads(metadata[SERVING_METADATA_KEY])]


def rewrite_head(s3: S3Client) -> None:
    """Write the head again as it is (a new ETag), as a fence would."""
    stored = s3.get_object(Bucket=MODEL_BUCKET, Key=HEAD)
    s3.put_object(
        Bucket=MODEL_BUCKET,
        Key=HEAD,
        Body=stored["Body"].read(),
        Metadata=stored["Metadata"],
    )


def test_a_head_carries_the_manifests_of_the_versions_it_sends_traffic_to(
    store: AliasStore, iris: Registry, s3: S3Client
) -> None:
    store.set_routing("iris", "prod", {1: 10, 2: 90, 3: 0}, actor="ann")
    stored = s3.get_object(Bucket=MODEL_BUCKET, Key=HEAD)
    items = json.loads(stored["Metadata"][SERVING_METADATA_KEY])
    assert [Manifest.from_dict(item) for item in items] == [
        iris.get_manifest("iris", 2),
        iris.get_manifest("iris", 1),
    ]
    assert SERVING_METADATA_KEY not in json.loads(stored["Body"].read())
    head = store.get("iris", "prod")
    assert [manifest.version for manifest in head.serving] == [2, 1]


def test_a_cold_container_reads_no_manifest_when_the_head_carries_it(
    store: AliasStore, iris: Registry, s3: S3Client
) -> None:
    store.set_routing("iris", "prod", {1: 100}, actor="ann")
    aliases, manifests, registry = caches(s3, Clock())
    aliases.get("iris", "prod")
    assert manifests.get("iris", 1) == iris.get_manifest("iris", 1)
    assert registry.reads == []


def test_a_head_written_before_heads_carried_manifests_is_still_served(
    store: AliasStore, iris: Registry, s3: S3Client
) -> None:
    store.set_routing("iris", "prod", {1: 100}, actor="ann")
    body = s3.get_object(Bucket=MODEL_BUCKET, Key=HEAD)["Body"].read()
    s3.put_object(Bucket=MODEL_BUCKET, Key=HEAD, Body=body)  # no metadata
    aliases, manifests, registry = caches(s3, Clock())
    assert aliases.get("iris", "prod").weights == {1: 100}
    assert manifests.get("iris", 1) == iris.get_manifest("iris", 1)
    assert registry.reads == [("get_manifest", "iris", 1)]
    assert store.get("iris", "prod").serving == ()


def test_unreadable_carried_manifests_fall_back_to_reading_them(
    store: AliasStore, iris: Registry, s3: S3Client
) -> None:
    store.set_routing("iris", "prod", {1: 100}, actor="ann")
    body = s3.get_object(Bucket=MODEL_BUCKET, Key=HEAD)["Body"].read()
    s3.put_object(
        Bucket=MODEL_BUCKET,
        Key=HEAD,
        Body=body,
        Metadata={SERVING_METADATA_KEY: '[{"name": "iris"}]'},
    )
    aliases, manifests, registry = caches(s3, Clock())
    aliases.get("iris", "prod")
    assert manifests.get("iris", 1).version == 1
    assert registry.reads == [("get_manifest", "iris", 1)]


def test_fencing_a_head_keeps_the_manifests_it_carries(
    store: AliasStore, s3: S3Client
) -> None:
    store.set_routing("iris", "prod", {1: 100}, actor="ann")
    store.delete_version("iris", 3)
    assert store.get("iris", "prod").fence == 1
    assert carried(s3) == [1]


def test_a_change_carries_the_new_routing(store: AliasStore, s3: S3Client) -> None:
    store.set_routing("iris", "prod", {1: 100}, actor="ann")
    store.promote("iris", "prod", 3, actor="ann")
    assert carried(s3) == [3]
    store.rollback("iris", "prod", actor="ann")
    assert carried(s3) == [1]


def test_a_deleted_version_is_still_refused_within_the_cache_window(
    store: AliasStore, iris: Registry, s3: S3Client
) -> None:
    store.set_routing("iris", "prod", {1: 100}, actor="ann")
    clock = Clock()
    aliases, manifests, registry = caches(s3, clock)
    aliases.get("iris", "prod")
    manifests.get("iris", 1)
    iris.write_tombstone("iris", 1, actor="ann")  # a delete that stopped here
    clock.now = 4.9
    assert manifests.get("iris", 1).version == 1  # trusted within the window
    rewrite_head(s3)
    clock.now = 6.0
    assert [m.version for m in aliases.get("iris", "prod").serving] == [1]
    with pytest.raises(VersionNotFoundError):  # the head did not renew the trust
        manifests.get("iris", 1)
    assert registry.reads[0] == ("is_live", "iris", 1)
    rewrite_head(s3)
    clock.now = 11.0
    assert [m.version for m in aliases.get("iris", "prod").serving] == [1]
    with pytest.raises(VersionNotFoundError):  # nor brings it back
        manifests.get("iris", 1)


def test_a_version_deleted_after_its_alias_moved_is_refused(
    store: AliasStore, iris: Registry, s3: S3Client
) -> None:
    store.set_routing("iris", "prod", {1: 100}, actor="ann")
    clock = Clock()
    aliases, manifests, _ = caches(s3, clock)
    aliases.get("iris", "prod")
    assert manifests.get("iris", 1).version == 1
    store.promote("iris", "prod", 2, actor="ann")
    store.delete_version("iris", 1)
    clock.now = 5.0
    assert aliases.get("iris", "prod").weights == {2: 100}
    assert manifests.get("iris", 2).version == 2
    with pytest.raises(VersionNotFoundError):
        manifests.get("iris", 1)
