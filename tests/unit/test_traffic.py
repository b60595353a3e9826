"""Choosing the version that answers (chalicelib.routing): statistics and the
properties that make canaries safe. No I/O; random sources are seeded."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Mapping

import pytest
from scipy.stats import chisquare

from chalicelib.traffic import choose_version, sampled, unit_hash

P_VALUE = 0.001
KEYS = [f"customer-{number}" for number in range(20_000)]
FEWER_KEYS = KEYS[:5000]


def never_drawn() -> float:
    raise AssertionError("a routing key must not use the random source")


def split(counts: Counter[int], weights: Mapping[int, float]) -> tuple[float, float]:
    """Chi-square p-values of ``counts`` against ``weights`` and against an even
    split of the same versions (which a working test must be able to refuse)."""
    versions = sorted(weights)
    observed = [counts[version] for version in versions]
    total = sum(observed)
    weight_sum = sum(weights.values())
    expected = [total * weights[version] / weight_sum for version in versions]
    even = [total / len(versions)] * len(versions)
    return chisquare(observed, expected).pvalue, chisquare(observed, even).pvalue


@pytest.mark.parametrize(
    "weights",
    [{1: 90, 2: 10}, {1: 70, 2: 20, 3: 10}, {1: 40, 2: 30, 3: 20, 4: 10}],
)
def test_random_draws_split_by_weight(weights: dict[int, float]) -> None:
    source = random.Random(1234)
    counts = Counter(
        choose_version(weights, None, source.random) for _ in range(20_000)
    )
    fits, even = split(counts, weights)
    assert fits > P_VALUE
    assert even < P_VALUE


@pytest.mark.parametrize(
    "weights",
    [{1: 90, 2: 10}, {1: 70, 2: 20, 3: 10}, {1: 40, 2: 30, 3: 20, 4: 10}],
)
def test_routing_keys_split_by_weight(weights: dict[int, float]) -> None:
    counts = Counter(choose_version(weights, key, never_drawn) for key in KEYS)
    fits, even = split(counts, weights)
    assert fits > P_VALUE
    assert even < P_VALUE


def test_the_same_key_always_gets_the_same_version() -> None:
    weights = {1: 50, 2: 30, 3: 20}
    first = [choose_version(weights, key, never_drawn) for key in KEYS[:2000]]
    again = [
        choose_version(dict(reversed(weights.items())), key, never_drawn)
        for key in KEYS[:2000]
    ]
    assert first == again
    assert set(first) == {1, 2, 3}


def test_keys_keep_their_versions_across_deployments() -> None:
    # Pinned: a change to the hash would move every sticky customer at once.
    assert unit_hash("customer-1", 2) == 0.35350761500465905
    chosen = [choose_version({1: 90, 2: 10}, key, never_drawn) for key in KEYS[:20]]
    assert [index for index, version in enumerate(chosen) if version == 2] == [
        7,
        11,
        12,
    ]


def test_the_unit_hash_is_uniform_in_its_range() -> None:
    values = [unit_hash(key, 1) for key in KEYS]
    assert all(0 < value <= 1 for value in values)
    deciles = Counter(min(int(value * 10), 9) for value in values)
    assert chisquare([deciles[d] for d in range(10)]).pvalue > P_VALUE


def assignments(weights: Mapping[int, float]) -> list[int]:
    return [choose_version(weights, key, never_drawn) for key in FEWER_KEYS]


def assert_only_moves_to(canary: int, before: list[int], after: list[int]) -> int:
    """Every key keeps its version or moves to the canary; none leaves the canary.
    Returns how many keys moved."""
    moved = 0
    for old, new in zip(before, after, strict=True):
        if old == canary:
            assert new == canary
        elif new != old:
            assert new == canary
            moved += 1
    return moved


def canary_steps(
    others: dict[int, float], canary: int, shares: list[float]
) -> list[dict[int, float]]:
    """Weights giving ``canary`` each share in turn, the rest in ``others``'s
    proportions (the usual canary step: it takes its traffic from all the others)."""
    total = sum(others.values())
    return [
        {
            **{
                version: weight / total * (1 - share)
                for version, weight in others.items()
            },
            canary: share,
        }
        for share in shares
    ]


def test_a_growing_canary_keeps_its_keys_with_two_versions() -> None:
    steps = [{1: 90, 2: 10}, {1: 80, 2: 20}, {1: 50, 2: 50}]
    results = [assignments(weights) for weights in steps]
    for before, after in itertools.pairwise(results):
        assert assert_only_moves_to(2, before, after) > 0
    shares = [result.count(2) / len(FEWER_KEYS) for result in results]
    assert shares == pytest.approx([0.1, 0.2, 0.5], abs=0.02)


@pytest.mark.parametrize(
    "steps",
    [
        canary_steps({1: 1, 2: 1}, 3, [0.1, 0.2, 0.5]),
        canary_steps({1: 6, 2: 3}, 3, [0.1, 0.2, 0.5]),
        canary_steps({1: 4, 2: 3, 3: 2}, 4, [0.1, 0.2, 0.5]),
        canary_steps({1: 5, 2: 2, 3: 1, 4: 1}, 5, [0.1, 0.2, 0.5, 0.9]),
        # The others keep their absolute weights: 10/100, 22.5/112.5, 90/180.
        [{1: 45, 2: 45, 3: 10}, {1: 45, 2: 45, 3: 22.5}, {1: 45, 2: 45, 3: 90}],
    ],
    ids=["3 even", "3 uneven", "4 versions", "5 versions", "others unchanged"],
)
def test_a_growing_canary_keeps_its_keys_with_more_versions(
    steps: list[dict[int, float]],
) -> None:
    canary = max(steps[0])
    results = [assignments(weights) for weights in steps]
    for before, after in itertools.pairwise(results):
        assert assert_only_moves_to(canary, before, after) > 0
    for weights, result in zip(steps, results, strict=True):
        share = weights[canary] / sum(weights.values())
        assert result.count(canary) / len(FEWER_KEYS) == pytest.approx(share, abs=0.02)


def test_a_growing_canary_keeps_its_keys_whoever_it_takes_them_from() -> None:
    # Here version 1 alone gives way. Some keys then also move from 1 to 2: no
    # router deciding from the key and the weights alone can avoid that for every
    # change (see chalicelib.routing), but the canary never loses a key.
    before = assignments({1: 60, 2: 30, 3: 10})
    after = assignments({1: 50, 2: 30, 3: 20})
    assert all(new == 3 for old, new in zip(before, after, strict=True) if old == 3)
    assert after.count(3) > before.count(3)


def test_the_property_check_catches_a_router_that_reshuffles() -> None:
    # Cumulative ranges over a hash move keys between the old versions when a
    # canary grows: the same check must refuse them.
    def ranges(weights: Mapping[int, float], key: str) -> int:
        point = unit_hash(key, 0) * sum(weights.values())
        for version in sorted(weights, reverse=True):
            point -= weights[version]
            if point <= 0:
                return version
        return min(weights)

    before = [ranges({1: 45, 2: 45, 3: 10}, key) for key in FEWER_KEYS]
    after = [ranges({1: 40, 2: 40, 3: 20}, key) for key in FEWER_KEYS]
    with pytest.raises(AssertionError):
        assert_only_moves_to(3, before, after)


@pytest.mark.parametrize("weights", [{1: 0, 2: 100, 3: 0}, {1: 50, 2: 0, 3: 50}])
def test_a_zero_weight_is_never_chosen(weights: dict[int, float]) -> None:
    source = random.Random(99)
    drawn = {choose_version(weights, None, source.random) for _ in range(5000)}
    keyed = {choose_version(weights, key, never_drawn) for key in KEYS[:5000]}
    live = {version for version, weight in weights.items() if weight > 0}
    assert drawn == keyed == live


def test_the_edges_of_the_draw_stay_inside_the_versions() -> None:
    weights = {1: 50, 2: 50}
    assert choose_version(weights, None, lambda: 0.0) == 1
    assert choose_version(weights, None, lambda: 0.9999999999) == 2


def test_a_single_live_version_needs_no_draw_or_hash() -> None:
    assert choose_version({4: 1, 5: 0}, None, never_drawn) == 4
    assert choose_version({4: 1}, "key", never_drawn) == 4


def test_no_positive_weight_is_refused() -> None:
    with pytest.raises(ValueError, match="no version has a positive weight"):
        choose_version({1: 0, 2: 0}, None, random.random)


def test_a_sample_takes_its_percentage() -> None:
    source = random.Random(7)
    drawn = sum(sampled(25, source.random) for _ in range(20_000))
    assert chisquare([drawn, 20_000 - drawn], [5000, 15000]).pvalue > P_VALUE
    assert not any(sampled(0, source.random) for _ in range(1000))
    assert all(sampled(100, source.random) for _ in range(1000))
