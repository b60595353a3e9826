"""Fixtures of the deployment tests: an IAM-enforcing moto server seeded like a
fresh ``dev`` deployment, and the app run with one function's credentials."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from chalice.test import Client

from app import app
from chalicelib import wiring
from tests.demo_support import ROOT
from tests.deploy.iam_support import PART_BYTES, STAGE, AppAs, Credentials, IamStack


@pytest.fixture(scope="session")
def iam_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamStack]:
    """The enforcing moto server with the demo registry (see ``iam_support``)."""
    log = tmp_path_factory.mktemp("iam-moto") / "moto.log"
    with IamStack(log) as stack:
        yield stack


@pytest.fixture
def app_as(
    iam_stack: IamStack,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    deployed_timeout: None,
) -> AppAs:
    """``with app_as(keys, **settings) as client``: the app on the dev stage whose
    container (fresh, with those settings changed) reaches the enforcing moto
    server with ``keys``, through the real client factories of
    ``chalicelib.wiring``."""

    @contextmanager
    def run_as(keys: Credentials, **changes: object) -> Iterator[Client]:
        for variable, value in keys.environment(iam_stack.endpoint_url).items():
            monkeypatch.setenv(variable, value)
        # boto3's default session keeps the first credentials it found: a fresh
        # container starts without one.
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
        # The stage's environment wins over the test's own: change the settings.
        # Capture writes each request at once, so a test can read it back.
        overrides = {
            "model_cache_dir": str(tmp_path / "models"),
            "batch_part_bytes": PART_BYTES,
            "capture_flush_records": 1,
            **changes,
        }
        wiring.install(wiring.Container(overrides=overrides))
        try:
            with Client(app, stage_name=STAGE, project_dir=str(ROOT)) as client:
                yield client
        finally:
            wiring.container().wait_for_background_work()
            wiring.reset()

    return run_as


@pytest.fixture(scope="session")
def package(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The dev stage's package, built once per session (``tools.package``): its
    folder holds deployment.zip, layer-deployment.zip and chalice.tf.json."""
    from tools.package import build_package

    # The longest wait of the suite: say what it is, after the file's name (past
    # pytest's output capture, as its own logging plugin writes live logs).
    capture: Any = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        request.config.get_terminal_writer().write(
            "(building the package: a minute or two the first time) ", flush=True
        )
    return build_package(STAGE, tmp_path_factory.mktemp("package") / "out")
