"""Pure rules of a cold start: the manifests an alias head carries, onnxruntime's
threads from the function's memory, and which models to preload."""

from __future__ import annotations

import json

import pytest

from chalicelib.aliases.document import (
    MAX_SERVING_METADATA_BYTES,
    SERVING_METADATA_KEY,
    read_serving,
    serving_metadata,
    serving_order,
)
from chalicelib.config import intra_op_threads
from chalicelib.preload import PreloadTarget, parse_preload
from chalicelib.registry.manifest import Manifest, Signature, TensorSpec


def manifest(version: int, *, labels: int = 0, name: str = "iris") -> Manifest:
    return Manifest(
        name=name,
        version=version,
        sha256="0" * 64,
        size=100,
        created_at="2026-01-01T00:00:00.000Z",
        signature=Signature(
            inputs=(TensorSpec("float_input", "FP32", (-1, 4)),),
            outputs=(TensorSpec("probabilities", "FP32", (-1, 3)),),
        ),
        labels=tuple(f"class-{i}" for i in range(labels)) or None,
    )


def test_the_heaviest_version_comes_first_and_unweighted_ones_not_at_all() -> None:
    assert serving_order({1: 10, 2: 90, 3: 0, 4: 90}) == [2, 4, 1]


def test_carried_manifests_round_trip_for_the_versions_given_traffic() -> None:
    metadata = serving_metadata((manifest(2), manifest(1)))
    assert read_serving("iris", {1: 10, 2: 90}, metadata) == (manifest(2), manifest(1))
    assert read_serving("iris", {1: 100, 2: 0}, metadata) == (manifest(1),)
    assert read_serving("other", {1: 10, 2: 90}, metadata) == ()


def test_manifests_that_do_not_fit_are_left_out_lightest_first() -> None:
    big = manifest(1, labels=120)
    metadata = serving_metadata((manifest(2), big))
    assert read_serving("iris", {1: 10, 2: 90}, metadata) == (manifest(2),)
    assert serving_metadata((manifest(3, labels=200),)) == {}
    value = serving_metadata((manifest(2), manifest(1)))[SERVING_METADATA_KEY]
    assert len(SERVING_METADATA_KEY) + len(value) <= MAX_SERVING_METADATA_BYTES
    assert value.isascii()


@pytest.mark.parametrize(
    "stored",
    [None, "", "not json", "{}", "[1]", '[{"name": "iris"}]', json.dumps([[1]])],
)
def test_unreadable_metadata_carries_nothing(stored: str | None) -> None:
    metadata = {} if stored is None else {SERVING_METADATA_KEY: stored}
    assert read_serving("iris", {1: 100}, metadata) == ()


@pytest.mark.parametrize(
    ("configured", "memory", "cores", "threads"),
    [
        (3, "2048", 2, 3),  # set explicitly: as set
        (0, None, 8, 0),  # not on Lambda: onnxruntime's choice
        (0, "128", 2, 1),  # at least one
        (0, "2048", 2, 1),  # 1.16 vCPUs
        (0, "3008", 2, 2),  # 1.70 vCPUs
        (0, "10240", 6, 6),  # 5.79 vCPUs
        (0, "10240", 4, 4),  # never more than the cores
        (0, "2048", None, 1),
    ],
)
def test_threads_follow_the_functions_share_of_cpu(
    configured: int, memory: str | None, cores: int | None, threads: int
) -> None:
    assert intra_op_threads(configured, memory, cores) == threads


def test_preload_reads_aliases_and_versions() -> None:
    assert parse_preload(" iris@prod, diabetes@3 ,iris@beta") == (
        PreloadTarget("iris", alias="prod"),
        PreloadTarget("diabetes", version=3),
        PreloadTarget("iris", alias="beta"),
    )
    assert parse_preload("") == parse_preload("  ") == ()
    assert [str(target) for target in parse_preload("iris@prod,iris@2")] == [
        "iris@prod",
        "iris@2",
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("iris", "TURNOUT_PRELOAD entry 'iris' is not model@alias or model@version"),
        ("iris@", "TURNOUT_PRELOAD entry 'iris@' is not model@alias or model@version"),
        ("@prod", "TURNOUT_PRELOAD entry '@prod' is not model@alias or model@version"),
        ("iris@prod,", "TURNOUT_PRELOAD entry '' is not model@alias or model@version"),
        ("iris@0", "TURNOUT_PRELOAD entry 'iris@0': invalid version name '0':"),
        ("Iris!@prod", "TURNOUT_PRELOAD entry 'Iris!@prod': invalid model name"),
        ("iris@pr od", "TURNOUT_PRELOAD entry 'iris@pr od': invalid alias name"),
    ],
)
def test_a_malformed_preload_is_refused_naming_the_entry(
    value: str, message: str
) -> None:
    with pytest.raises(ValueError) as raised:
        parse_preload(value)
    assert str(raised.value).startswith(message)
