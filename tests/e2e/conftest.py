"""The real stack for end-to-end tests: ``tools.devstack`` (moto server, demo
registry, S3 event pump, ``chalice local``) on free loopback ports, once per
session, an HTTP client on it, and waits for what its S3 events produce."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chalicelib.batch import keys
from tests.e2e.e2e_support import STARTUP_TIMEOUT, HttpClient, eventually
from tools.devstack.stack import DevStack


@pytest.fixture(scope="session")
def dev_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """moto server + demo registry + event pump + chalice local (stage dev).

    Attributes: ``api_url``, ``endpoint_url``, ``model_bucket``, ``batch_bucket``,
    ``s3`` and ``sqs`` (clients on the moto server), ``registry`` and ``aliases``
    (the registry library on the model bucket), ``logs()`` (the children's logs).
    The demo aliases (iris prod and staging, diabetes prod) are shared: a test
    that changes routing makes an alias of its own.
    """
    log_dir = tmp_path_factory.mktemp("dev-stack")
    with DevStack(log_dir=log_dir, startup_timeout=STARTUP_TIMEOUT) as stack:
        yield stack


@pytest.fixture(scope="session")
def api(dev_stack: DevStack) -> HttpClient:
    """An HTTP client on chalice local."""
    return HttpClient(dev_stack.api_url)


@pytest.fixture
def wait_for_object(dev_stack: DevStack) -> Callable[..., bytes]:
    """``wait_for_object(bucket, key, timeout=30.0)``: poll the moto server until
    the object exists and return its bytes; fails with the stack's logs."""

    def wait(bucket: str, key: str, timeout: float = 30.0) -> bytes:
        def stored() -> Any:
            try:
                return dev_stack.s3.get_object(Bucket=bucket, Key=key)
            except dev_stack.s3.exceptions.NoSuchKey:
                return None

        response = eventually(
            stored,
            timeout=timeout,
            message=lambda: f"s3://{bucket}/{key} did not appear\n" + dev_stack.logs(),
        )
        data: bytes = response["Body"].read()
        return data

    return wait


@pytest.fixture
def wait_for_batch(dev_stack: DevStack) -> Callable[..., dict[str, Any]]:
    """``wait_for_batch(key, timeout=30.0)``: the manifest of the batch job for
    ``incoming/...`` ``key`` once it has finished (its status is no longer
    ``running``); fails with the stack's logs."""

    def wait(key: str, timeout: float = 30.0) -> dict[str, Any]:
        assert key.startswith("incoming/"), key
        manifest_key = keys.record_key(key)

        manifest: dict[str, Any] = {}

        def finished() -> dict[str, Any] | None:
            nonlocal manifest
            try:
                response = dev_stack.s3.get_object(
                    Bucket=dev_stack.batch_bucket, Key=manifest_key
                )
            except dev_stack.s3.exceptions.NoSuchKey:
                return None
            manifest = json.loads(response["Body"].read())
            return None if manifest.get("status", "running") == "running" else manifest

        return eventually(
            finished,
            timeout=timeout,
            message=lambda: (
                f"no finished manifest s3://{dev_stack.batch_bucket}/"
                f"{manifest_key} (last: {manifest})\n" + dev_stack.logs()
            ),
        )

    return wait
