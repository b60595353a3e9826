"""Fixtures of the functional tests: the app through ``chalice.test``, its REST
routes and its batch functions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from chalice.test import Client

from chalicelib.registry.versions import Registry
from tests.functional.batch_support import Batch, batch_functions
from tests.functional.rest_support import remember_inspections, serving_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@pytest.fixture
def client(request: pytest.FixtureRequest) -> Iterator[Client]:
    """The app on the dev stage over the demo registry, on fresh container state
    (``serving_client``). A module whose app needs other settings overrides this
    fixture with a ``serving_client`` of its own."""
    yield from serving_client(request)


@pytest.fixture
def settings_changes() -> dict[str, Any]:
    """Settings the test wants changed (override in a test with a parametrize or
    by mutating the dictionary before the first delivery)."""
    return {}


@pytest.fixture
def batch_app(
    s3: S3Client,
    demo_registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    settings_changes: dict[str, Any],
    deployed_timeout: None,
) -> Iterator[Batch]:
    """The app's batch functions over the demo registry, with a deployed
    function's 900 s to live and ``settings_changes`` applied."""
    remember_inspections(monkeypatch)
    with batch_functions(settings_changes, tmp_path) as client:
        yield Batch(s3, client)
