"""Alias routing rules and the alias document's JSON form (pure)."""

from __future__ import annotations

import json
import math

import pytest

from chalicelib.aliases.document import (
    AliasDocument,
    Revision,
    Shadow,
    validate_routing,
)
from chalicelib.errors import InvalidAliasError


@pytest.mark.parametrize(
    ("weights", "shadow"),
    [
        ({1: 90, 2: 10}, None),
        ({1: 0, 2: 1}, None),
        ({1: 0.5}, None),
        ({1: 20, 2: 30, 3: 40, 4: 10}, None),
        ({1: 100}, Shadow(2, 5)),
        ({1: 100}, Shadow(2, 100)),
        ({1: 100}, Shadow(2, 0.01)),
    ],
)
def test_valid_routing_passes(weights: dict[int, float], shadow: Shadow | None) -> None:
    validate_routing(weights, shadow)


@pytest.mark.parametrize(
    ("weights", "shadow", "reason"),
    [
        ({}, None, "give at least one version and its weight"),
        ({1: -1, 2: 5}, None, "weight of version 1 is negative"),
        ({1: 0, 2: 0}, None, "the weights must have a positive sum"),
        ({0: 1}, None, "version 0 is not a positive integer"),
        ({True: 1}, None, "version True is not a positive integer"),
        ({1: math.nan}, None, "weight of version 1 is not a number"),
        ({1: math.inf}, None, "weight of version 1 is not a number"),
        ({1: 100}, Shadow(2, 0), "shadow percentage 0 is not in (0, 100]"),
        ({1: 100}, Shadow(2, -5), "shadow percentage -5 is not in (0, 100]"),
        ({1: 100}, Shadow(2, 100.5), "shadow percentage 100.5 is not in (0, 100]"),
        ({1: 100}, Shadow(2, math.nan), "shadow percentage nan is not in (0, 100]"),
        ({1: 100}, Shadow(0, 5), "shadow version 0 is not valid"),
    ],
)
def test_broken_rules_are_refused_by_name(
    weights: dict[int, float], shadow: Shadow | None, reason: str
) -> None:
    with pytest.raises(InvalidAliasError) as caught:
        validate_routing(weights, shadow)
    assert str(caught.value) == f"invalid alias: {reason}"


def test_a_revision_names_its_weighted_and_shadow_versions() -> None:
    revision = Revision(3, {1: 0, 2: 100}, Shadow(4, 5), "t", "a", "r")
    assert revision.versions() == {1, 2, 4}


def test_the_alias_head_round_trips_through_json() -> None:
    document = AliasDocument(
        name="iris",
        alias="prod",
        current=Revision(
            2, {2: 10, 1: 90}, Shadow(3, 2.5), "2026-01-02T00:00:00.000Z", "bob", ""
        ),
        revision_id="00000002-5f2a",
        fence=3,
    )
    data = json.loads(json.dumps(document.to_dict()))
    assert data == {
        "name": "iris",
        "alias": "prod",
        "revision": 2,
        "weights": {"1": 90, "2": 10},
        "shadow": {"version": 3, "percent": 2.5},
        "updated_at": "2026-01-02T00:00:00.000Z",
        "actor": "bob",
        "reason": "",
        "revision_id": "00000002-5f2a",
        "fence": 3,
    }
    assert AliasDocument.from_dict(data) == document
    assert AliasDocument.from_dict(data).revision == 2
