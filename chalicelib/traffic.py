"""Choosing the version that answers, from an alias's weights (pure).

With a routing key the choice is weighted rendezvous hashing: every version gets
the score ``-ln(u) / weight`` where ``u`` is a hash of (key, version) in (0, 1],
and the lowest score wins. A version wins with probability weight / total, and
when one version's weight grows while the others' stay or shrink, every key that
was on it stays on it. When the others keep their weights, or shrink in the same
proportion (the usual canary step), only keys moving to it change, for any number
of versions, unlike cumulative ranges. When the others shrink unevenly, some keys
also move among them: no rule that decides from the key and the weights alone can
avoid that for every change of three or more versions.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping

_HASH_SCALE = float(1 << 64)


def unit_hash(routing_key: str, version: int) -> float:
    """A uniform, stable number in (0, 1] for the pair (key, version)."""
    digest = hashlib.blake2b(
        f"{version}\x00{routing_key}".encode(), digest_size=8
    ).digest()
    return (int.from_bytes(digest, "big") + 1) / _HASH_SCALE


def choose_version(
    weights: Mapping[int, float],
    routing_key: str | None,
    draw: Callable[[], float],
) -> int:
    """The version for one request.

    ``weights`` maps versions to non-negative weights with a positive sum. With a
    ``routing_key`` the result depends on the key alone (sticky); without one it
    is a weighted random choice using ``draw()``, a uniform number in [0, 1).
    """
    live = sorted(
        (version, weight) for version, weight in weights.items() if weight > 0
    )
    if not live:
        raise ValueError("no version has a positive weight")
    if len(live) == 1:
        return live[0][0]
    if routing_key is not None:
        return min(
            live, key=lambda item: -math.log(unit_hash(routing_key, item[0])) / item[1]
        )[0]
    point = draw() * sum(weight for _, weight in live)
    for version, weight in live:
        point -= weight
        if point < 0:
            return version
    return live[-1][0]


def sampled(percent: float, draw: Callable[[], float]) -> bool:
    """Whether this request is in a ``percent`` % sample (0..100): copied to a
    shadow, captured."""
    return draw() * 100.0 < percent
