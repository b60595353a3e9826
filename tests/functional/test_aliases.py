"""Aliases on moto: rules, compare-and-swap, history, rollback, deletion, cache."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from chalicelib.aliases.cache import AliasCache
from chalicelib.aliases.document import AliasDocument, Revision, Shadow
from chalicelib.aliases.store import AliasStore
from chalicelib.errors import (
    AliasConflictError,
    AliasNotFoundError,
    InvalidAliasError,
    InvalidNameError,
    ModelNotFoundError,
    RevisionNotFoundError,
    TurnoutError,
    VersionInUseError,
    VersionNotFoundError,
)
from chalicelib.registry.versions import Registry
from tests.demo_support import MODEL_BUCKET, model_bytes

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class Clock:
    """A wall clock that moves one minute per reading, from a fixed start."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


@pytest.fixture
def iris(registry: Registry) -> Registry:
    """iris versions 1, 2 and 3, no aliases."""
    for _ in range(3):
        registry.register("iris", model_bytes("iris-v1.onnx"))
    return registry


@pytest.fixture
def store(iris: Registry) -> AliasStore:
    """An alias store whose clock reads 12:01, 12:02... on 2026-03-01."""
    return AliasStore(iris, clock=Clock())


def alias_object_exists(s3: S3Client, alias: str) -> bool:
    listing = s3.list_objects_v2(Bucket=MODEL_BUCKET, Prefix="models/iris/aliases/")
    keys = [item["Key"] for item in listing.get("Contents", [])]
    return f"models/iris/aliases/{alias}.json" in keys


def test_setting_an_alias_records_a_revision(store: AliasStore) -> None:
    document = store.set_routing(
        "iris", "prod", {1: 90, 2: 10}, shadow=Shadow(3, 5), actor="ann", reason="go"
    )
    assert document.revision == 1
    assert document.weights == {1: 90, 2: 10}
    assert document.shadow == Shadow(3, 5)
    assert store.history("iris", "prod") == (
        Revision(
            1, {1: 90, 2: 10}, Shadow(3, 5), "2026-03-01T12:01:00.000Z", "ann", "go"
        ),
    )
    assert store.get("iris", "prod") == document


def test_any_number_of_versions_can_share_an_alias(store: AliasStore) -> None:
    document = store.set_routing("iris", "prod", {1: 1, 2: 1, 3: 2.5}, actor="ann")
    assert store.get("iris", "prod").weights == {1: 1, 2: 1, 3: 2.5}
    assert document.weights == {1: 1, 2: 1, 3: 2.5}


@pytest.mark.parametrize(
    ("weights", "shadow", "error", "message"),
    [
        ({1: -10, 2: 20}, None, InvalidAliasError,
         "invalid alias: weight of version 1 is negative"),
        ({1: 0, 2: 0}, None, InvalidAliasError,
         "invalid alias: the weights must have a positive sum"),
        ({1: 50, 4: 50}, None, VersionNotFoundError, "model 'iris' has no version 4"),
        ({1: 100}, Shadow(2, 0), InvalidAliasError,
         "invalid alias: shadow percentage 0 is not in (0, 100]"),
        ({1: 100}, Shadow(2, 101), InvalidAliasError,
         "invalid alias: shadow percentage 101 is not in (0, 100]"),
        ({1: 100}, Shadow(7, 5), VersionNotFoundError,
         "model 'iris' has no version 7"),
    ],
)  # fmt: skip
def test_broken_rules_are_refused_and_change_nothing(
    store: AliasStore,
    s3: S3Client,
    weights: dict[int, float],
    shadow: Shadow | None,
    error: type[TurnoutError],
    message: str,
) -> None:
    with pytest.raises(error) as caught:
        store.set_routing("iris", "new", weights, shadow=shadow, actor="ann")
    assert str(caught.value) == message
    assert not alias_object_exists(s3, "new")
    store.set_routing("iris", "prod", {1: 100}, actor="ann")
    with pytest.raises(error):
        store.set_routing("iris", "prod", weights, shadow=shadow, actor="ann")
    assert [r.revision for r in store.history("iris", "prod")] == [1]


def test_an_alias_of_an_unknown_model_is_refused(store: AliasStore) -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        store.set_routing("rose", "prod", {1: 100}, actor="ann")
    assert str(caught.value) == "model 'rose' not found"


def test_an_alias_name_that_reads_as_a_version_is_refused(store: AliasStore) -> None:
    with pytest.raises(InvalidNameError) as caught:
        store.set_routing("iris", "2", {1: 100}, actor="ann")
    assert str(caught.value) == (
        "invalid alias name '2': all digits, so it would read as a version number"
    )


def test_a_missing_alias_is_not_found(store: AliasStore) -> None:
    with pytest.raises(AliasNotFoundError) as caught:
        store.get("iris", "prod")
    assert str(caught.value) == "model 'iris' has no alias 'prod'"


def test_concurrent_updates_never_lose_one(store: AliasStore) -> None:
    store.set_routing("iris", "prod", {1: 100}, actor="setup")
    threads = 8
    start = threading.Barrier(threads)
    landed: list[tuple[int, str]] = []
    conflicts: list[AliasConflictError] = []
    failures: list[BaseException] = []

    def update(index: int) -> None:
        actor = f"operator-{index}"
        start.wait()
        try:
            document = store.set_routing(
                "iris", "prod", {1: 100 - index, 2: index}, actor=actor
            )
            landed.append((document.revision, actor))
        except AliasConflictError as error:
            conflicts.append(error)
        except BaseException as error:
            failures.append(error)

    workers = [threading.Thread(target=update, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures == []
    assert len(landed) + len(conflicts) == threads
    assert landed
    history = store.history("iris", "prod")
    assert [(r.revision, r.actor) for r in history] == [(1, "setup"), *sorted(landed)]
    assert [r.revision for r in history] == list(range(1, len(landed) + 2))
    for revision in history[1:]:  # each landed revision holds its own routing
        index = int(revision.actor.removeprefix("operator-"))
        assert revision.weights == {1: 100 - index, 2: index}
    for conflict in conflicts:
        assert conflict.revision is not None and conflict.revision >= 2


def test_an_update_based_on_an_old_revision_conflicts(store: AliasStore) -> None:
    store.set_routing("iris", "prod", {1: 100}, actor="ann", expected_revision=0)
    with pytest.raises(AliasConflictError) as caught:
        store.set_routing("iris", "prod", {2: 100}, actor="bob", expected_revision=0)
    assert str(caught.value) == (
        "alias iris@prod changed concurrently and is now at revision 1: "
        "read it again and retry"
    )
    updated = store.set_routing(
        "iris", "prod", {2: 100}, actor="bob", expected_revision=1
    )
    assert updated.revision == 2
    with pytest.raises(AliasConflictError):
        store.set_routing("iris", "prod", {3: 100}, actor="cy", expected_revision=1)
    assert store.get("iris", "prod").weights == {2: 100}


def test_expecting_a_revision_of_a_missing_alias_conflicts(store: AliasStore) -> None:
    with pytest.raises(AliasConflictError) as caught:
        store.set_routing("iris", "beta", {1: 100}, actor="ann", expected_revision=2)
    assert str(caught.value) == (
        "alias iris@beta changed concurrently and does not exist: "
        "read it again and retry"
    )


def test_the_history_keeps_time_actor_and_reason(store: AliasStore) -> None:
    store.set_routing("iris", "prod", {1: 100}, actor="ann", reason="launch")
    store.set_routing("iris", "prod", {1: 90, 2: 10}, actor="bob", reason="canary")
    store.promote("iris", "prod", 2, actor="cy")
    history = store.history("iris", "prod")
    assert [(r.revision, r.updated_at, r.actor, r.reason) for r in history] == [
        (1, "2026-03-01T12:01:00.000Z", "ann", "launch"),
        (2, "2026-03-01T12:02:00.000Z", "bob", "canary"),
        (3, "2026-03-01T12:03:00.000Z", "cy", "promote 2"),
    ]
    assert [r.weights for r in history] == [{1: 100}, {1: 90, 2: 10}, {2: 100}]


def test_promote_sends_everything_to_one_version_and_drops_the_shadow(
    store: AliasStore,
) -> None:
    store.set_routing("iris", "prod", {1: 90, 2: 10}, shadow=Shadow(3, 5), actor="a")
    document = store.promote("iris", "prod", 2, actor="bob", reason="v2 is better")
    assert (document.weights, document.shadow) == ({2: 100}, None)
    assert document.current.reason == "v2 is better"


def test_rollback_restores_the_previous_revision_as_a_new_one(
    store: AliasStore,
) -> None:
    store.set_routing("iris", "prod", {1: 90, 2: 10}, actor="ann", reason="canary")
    store.set_routing("iris", "prod", {1: 50, 2: 50}, shadow=Shadow(3, 5), actor="bob")
    document = store.rollback("iris", "prod", actor="cy")
    assert document.current == Revision(
        3, {1: 90, 2: 10}, None, "2026-03-01T12:03:00.000Z", "cy",
        "rollback to revision 1",
    )  # fmt: skip
    assert [r.revision for r in store.history("iris", "prod")] == [1, 2, 3]
    assert store.history("iris", "prod")[1].shadow == Shadow(
        3, 5
    )  # the past stays as it was
    again = store.rollback("iris", "prod", actor="cy", reason="undo")
    assert again.revision == 4
    assert (again.weights, again.shadow) == ({1: 50, 2: 50}, Shadow(3, 5))
    assert store.history("iris", "prod")[2].revision == 3
    assert again.current.reason == "undo"


def test_a_rollback_can_name_its_revision(store: AliasStore) -> None:
    store.set_routing("iris", "prod", {1: 100}, actor="ann")
    store.set_routing("iris", "prod", {2: 100}, shadow=Shadow(1, 10), actor="ann")
    store.set_routing("iris", "prod", {3: 100}, actor="ann")
    document = store.rollback("iris", "prod", actor="bob", to_revision=2)
    assert (document.revision, document.weights) == (4, {2: 100})
    assert document.shadow == Shadow(1, 10)
    assert document.current.reason == "rollback to revision 2"


def test_rollback_refusals(store: AliasStore, iris: Registry) -> None:
    with pytest.raises(AliasNotFoundError):
        store.rollback("iris", "prod", actor="ann")
    store.set_routing("iris", "prod", {3: 100}, actor="ann")
    with pytest.raises(InvalidAliasError) as single:
        store.rollback("iris", "prod", actor="ann")
    assert str(single.value) == (
        "invalid alias: iris@prod has a single revision: nothing to roll back to"
    )
    with pytest.raises(RevisionNotFoundError) as missing:
        store.rollback("iris", "prod", actor="ann", to_revision=9)
    assert str(missing.value) == "alias iris@prod has no revision 9"
    store.set_routing("iris", "prod", {1: 100}, actor="ann")
    store.delete_version("iris", 3)
    with pytest.raises(VersionNotFoundError) as deleted:
        store.rollback("iris", "prod", actor="ann")
    assert str(deleted.value) == "model 'iris' has no version 3"
    assert store.get("iris", "prod").revision == 2


def test_a_routed_version_cannot_be_deleted(store: AliasStore, iris: Registry) -> None:
    store.set_routing("iris", "prod", {1: 100, 2: 0}, actor="ann")
    store.set_routing("iris", "beta", {1: 100}, shadow=Shadow(3, 5), actor="ann")
    for version, aliases in [(1, "beta, prod"), (2, "prod"), (3, "beta")]:
        with pytest.raises(VersionInUseError) as caught:
            store.delete_version("iris", version)
        assert str(caught.value) == (
            f"version {version} of 'iris' is routed to by alias {aliases}: "
            "move the traffic away first"
        )
    assert iris.list_versions("iris") == [1, 2, 3]


def test_an_unrouted_version_is_deleted_and_its_number_never_reused(
    store: AliasStore, iris: Registry, s3: S3Client
) -> None:
    store.set_routing("iris", "prod", {3: 100}, actor="ann")
    store.promote("iris", "prod", 1, actor="ann")  # 3 only in the history now
    store.delete_version("iris", 3)
    assert iris.list_versions("iris") == [1, 2]
    with pytest.raises(VersionNotFoundError):
        iris.get_manifest("iris", 3)
    listing = s3.list_objects_v2(Bucket=MODEL_BUCKET, Prefix="models/iris/versions/3/")
    assert [item["Key"] for item in listing.get("Contents", [])] == [
        "models/iris/versions/3/claim.json",
        "models/iris/versions/3/deleted.json",
    ]
    assert iris.register("iris", model_bytes("iris-v1.onnx")).version == 4
    with pytest.raises(VersionNotFoundError):
        store.delete_version("iris", 3)


def test_the_cache_sees_a_change_after_its_ttl(store: AliasStore, s3: S3Client) -> None:
    store.set_routing("iris", "prod", {1: 100}, actor="ann")
    now = [100.0]
    clock: Callable[[], float] = lambda: now[0]  # noqa: E731
    cache = AliasCache(s3, MODEL_BUCKET, ttl_seconds=5, clock=clock)
    first = cache.get("iris", "prod")
    assert first.weights == {1: 100}
    store.set_routing("iris", "prod", {2: 100}, actor="ann")
    now[0] = 104.9
    assert cache.get("iris", "prod") is first  # trusted within the TTL
    now[0] = 105.0
    assert cache.get("iris", "prod").weights == {2: 100}


def test_the_cache_keeps_an_unchanged_document_after_revalidating(
    store: AliasStore, s3: S3Client
) -> None:
    store.set_routing("iris", "prod", {1: 100}, actor="ann")
    now = [0.0]
    cache = AliasCache(s3, MODEL_BUCKET, ttl_seconds=5, clock=lambda: now[0])
    first = cache.get("iris", "prod")
    now[0] = 60.0
    assert cache.get("iris", "prod") is first  # 304 Not Modified: same object
    store.set_routing("iris", "prod", {2: 100}, actor="ann")
    now[0] = 64.0
    assert cache.get("iris", "prod") is first  # revalidated at 60: still trusted
    now[0] = 65.0
    assert cache.get("iris", "prod").revision == 2


def test_the_cache_reports_a_missing_alias(s3: S3Client, iris: Registry) -> None:
    cache = AliasCache(s3, MODEL_BUCKET, ttl_seconds=5, clock=lambda: 0.0)
    with pytest.raises(AliasNotFoundError):
        cache.get("iris", "prod")


# -- heads and revision objects ----------------------------------------------------


def stored_json(s3: S3Client, key: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        s3.get_object(Bucket=MODEL_BUCKET, Key=key)["Body"].read()
    )
    return document


def revision_keys(s3: S3Client, alias: str) -> list[str]:
    prefix = f"models/iris/aliases/{alias}/revisions/"
    listing = s3.list_objects_v2(Bucket=MODEL_BUCKET, Prefix=prefix)
    return [item["Key"][len(prefix) :] for item in listing.get("Contents", [])]


def test_the_head_holds_the_current_revision_only(iris: Registry, s3: S3Client) -> None:
    suffixes = iter(f"s{index}" for index in range(100))
    store = AliasStore(iris, clock=Clock(), suffix=lambda: next(suffixes))
    for step in range(30):
        store.set_routing("iris", "prod", {1: 100 - step, 2: step}, actor="rollout")
    head = stored_json(s3, "models/iris/aliases/prod.json")
    assert head == {
        "name": "iris",
        "alias": "prod",
        "revision": 30,
        "weights": {"1": 71, "2": 29},
        "shadow": None,
        "updated_at": "2026-03-01T12:30:00.000Z",
        "actor": "rollout",
        "reason": "",
        "revision_id": "00000030-s29",
        "fence": 0,
    }
    assert revision_keys(s3, "prod") == [
        f"{revision:08d}-s{revision - 1}.json" for revision in range(1, 31)
    ]
    assert stored_json(s3, "models/iris/aliases/prod/revisions/00000002-s1.json") == {
        "revision": 2,
        "weights": {"1": 99, "2": 1},
        "shadow": None,
        "updated_at": "2026-03-01T12:02:00.000Z",
        "actor": "rollout",
        "reason": "",
        "previous": "00000001-s0",
    }
    assert [r.revision for r in store.history("iris", "prod")] == list(range(1, 31))
    assert [d.alias for d in store.list_aliases("iris")] == ["prod"]


class PausingStore(AliasStore):
    """An alias store that runs ``meanwhile`` once, after checking a change and
    before writing its head: the window a concurrent operator can fall into."""

    def __init__(self, registry: Registry, meanwhile: Callable[[], object]) -> None:
        super().__init__(registry, clock=Clock())
        self._meanwhile: Callable[[], object] | None = meanwhile

    def _before_head_write(self, document: AliasDocument) -> None:
        if self._meanwhile is not None:
            meanwhile, self._meanwhile = self._meanwhile, None
            meanwhile()


def test_a_writer_that_loses_the_head_leaves_no_trace_in_the_history(
    store: AliasStore, iris: Registry
) -> None:
    store.set_routing("iris", "prod", {1: 100}, actor="ann")
    pausing = PausingStore(
        iris, lambda: store.set_routing("iris", "prod", {2: 100}, actor="bob")
    )
    with pytest.raises(AliasConflictError) as caught:
        pausing.set_routing("iris", "prod", {3: 100}, actor="cy")
    assert caught.value.revision == 2
    history = store.history("iris", "prod")
    assert [(r.revision, r.actor) for r in history] == [(1, "ann"), (2, "bob")]
    rolled_back = store.rollback("iris", "prod", actor="dee")
    assert (rolled_back.revision, rolled_back.weights) == (3, {1: 100})


def test_a_delete_inside_an_alias_change_window_wins(
    store: AliasStore, iris: Registry
) -> None:
    store.set_routing("iris", "prod", {1: 100}, actor="ann")
    pausing = PausingStore(iris, lambda: store.delete_version("iris", 3))
    with pytest.raises(AliasConflictError):
        pausing.set_routing("iris", "prod", {3: 100}, actor="bob")
    assert iris.list_versions("iris") == [1, 2]
    assert store.get("iris", "prod").weights == {1: 100}
    with pytest.raises(VersionNotFoundError) as retried:
        pausing.set_routing("iris", "prod", {3: 100}, actor="bob")
    assert str(retried.value) == "model 'iris' has no version 3"


def test_a_delete_inside_a_new_alias_window_removes_the_alias(
    store: AliasStore, iris: Registry, s3: S3Client
) -> None:
    pausing = PausingStore(iris, lambda: store.delete_version("iris", 3))
    with pytest.raises(VersionNotFoundError):
        pausing.set_routing("iris", "beta", {3: 100}, actor="bob")
    assert iris.list_versions("iris") == [1, 2]
    assert not alias_object_exists(s3, "beta")


def test_an_alias_change_after_the_tombstone_is_refused(
    store: AliasStore, iris: Registry
) -> None:
    store.set_routing("iris", "beta", {1: 100}, actor="ann")
    refused: list[TurnoutError] = []

    class RoutingDuringDelete(AliasStore):
        """Tries to route beta to version 2 once the tombstone is written, when
        the delete lists the aliases to fence them."""

        listings = 0

        def _alias_names(self, name: str) -> list[str]:
            self.listings += 1
            if self.listings == 2:
                with pytest.raises(VersionNotFoundError) as caught:
                    store.set_routing("iris", "beta", {2: 100}, actor="bob")
                refused.append(caught.value)
            return super()._alias_names(name)

    RoutingDuringDelete(iris).delete_version("iris", 2)
    assert [str(error) for error in refused] == ["model 'iris' has no version 2"]
    assert iris.list_versions("iris") == [1, 3]
    assert store.get("iris", "beta").weights == {1: 100}


def test_a_tombstoned_version_is_gone_for_everyone(
    store: AliasStore, iris: Registry
) -> None:
    iris.write_tombstone("iris", 3, actor="ann")  # a delete that stopped here
    assert iris.list_versions("iris") == [1, 2]
    assert not iris.is_live("iris", 3)
    with pytest.raises(VersionNotFoundError):
        iris.get_manifest("iris", 3)
    with pytest.raises(VersionNotFoundError):
        store.set_routing("iris", "prod", {3: 100}, actor="bob")
