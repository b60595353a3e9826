"""Fakes for the rollout tests: a clock moved by hand and a metrics source that
serves deterministic traffic by the alias's current weights."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from chalicelib.rollout.judge import VersionFigures

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@dataclass
class Behaviour:
    """How a version answers: its error rate and latency figures."""

    error_rate: float = 0.002
    p50_ms: float = 10.0
    p99_ms: float = 40.0


@dataclass
class FakeSource:
    """``per_minute`` requests a minute, split by ``weights()`` (the alias as it
    is now) unless ``split`` overrides the shares; each version behaves as
    ``behaviours`` says (healthy by default). ``silent`` serves no traffic."""

    weights: Callable[[], Mapping[int, float]]
    per_minute: float = 200.0
    behaviours: dict[int, Behaviour] = field(default_factory=dict)
    split: dict[int, float] | None = None
    silent: bool = False
    calls: int = 0

    def figures(
        self,
        name: str,
        alias: str,
        versions: Iterable[int],
        start: datetime,
        end: datetime,
    ) -> dict[int, VersionFigures]:
        self.calls += 1
        minutes = (end - start).total_seconds() / 60
        weights = self.split or self.weights()
        total = sum(weights.values())
        found = {}
        for version in versions:
            share = weights.get(version, 0) / total
            requests = 0 if self.silent else int(self.per_minute * minutes * share)
            if not requests:
                continue
            behaviour = self.behaviours.get(version, Behaviour())
            found[version] = VersionFigures(
                version,
                requests,
                int(requests * behaviour.error_rate),
                behaviour.p50_ms,
                behaviour.p99_ms,
            )
        return found
