"""Preloading models during init (TURNOUT_PRELOAD), on moto."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from chalicelib import wiring
from chalicelib.preload import parse_preload, preload_models
from chalicelib.registry.versions import Registry

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mypy_boto3_s3 import S3Client


def install(
    s3: S3Client, registry: Registry, directory: Path, **overrides: str
) -> wiring.Container:
    wired = wiring.Container(
        overrides={
            "model_bucket": registry.bucket,
            "model_cache_dir": str(directory),
            **overrides,
        },
        s3=s3,
    )
    wiring.install(wired)
    return wired


@pytest.fixture
def container(
    s3: S3Client, demo_registry: Registry, tmp_path: Path
) -> Iterator[wiring.Container]:
    yield install(s3, demo_registry, tmp_path)
    wiring.reset()


def test_an_alias_preloads_every_version_it_sends_traffic_to(
    container: wiring.Container,
) -> None:
    preload_models(container.predictor, parse_preload("iris@prod,diabetes@1"))
    assert container.predictor.models.cached() == [
        ("iris", 1),
        ("iris", 2),
        ("diabetes", 1),
    ]


def test_a_target_that_cannot_load_is_logged_and_the_others_still_load(
    container: wiring.Container, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="turnout.preload")
    preload_models(
        container.predictor, parse_preload("iris@9,nosuch@prod,iris@beta,diabetes@prod")
    )
    assert container.predictor.models.cached() == [("diabetes", 1)]
    failures = [
        (record.getMessage(), str(record.exc_info[1]))
        for record in caplog.records
        if record.exc_info
    ]
    assert failures == [
        ("could not preload iris@9", "model 'iris' has no version 9"),
        ("could not preload nosuch@prod", "model 'nosuch' not found"),
        ("could not preload iris@beta", "model 'iris' has no alias 'beta'"),
    ]


def test_the_setting_is_what_init_preloads(
    container: wiring.Container, demo_registry: Registry, tmp_path: Path
) -> None:
    wiring.preload()
    assert "predictor" not in vars(container)  # nothing to preload: nothing built
    preloading = install(container.s3, demo_registry, tmp_path, preload="iris@2")
    wiring.preload()
    assert preloading.predictor.models.cached() == [("iris", 2)]


def test_a_malformed_setting_fails_the_init(
    container: wiring.Container, demo_registry: Registry, tmp_path: Path
) -> None:
    install(container.s3, demo_registry, tmp_path, preload="iris")
    with pytest.raises(ValueError, match="TURNOUT_PRELOAD entry 'iris' is not"):
        wiring.preload()
