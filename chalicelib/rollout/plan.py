"""A progressive rollout's plan, its state and the moves between states (pure).

A rollout moves an alias's traffic to a target version in steps (percentages of
the alias's traffic, the last one 100). At each step the target gets its share
and every other version the rest, in the proportions they had before the
rollout: the one kind of change under which the alias's weighted rendezvous
hashing (``chalicelib.traffic``) only ever moves sticky keys *to* the target.

States::

    stepping           waiting for the step's evidence (evaluated on schedule)
    holding            the step's interval is over but the evidence is thin
    paused             stopped by an operator, a manual alias change or a
                       sample-ratio mismatch; ``resume`` continues
    awaiting_approval  (``gate``) the last step waits for ``approve``
    completed          the target serves 100 %
    rolled_back        the alias is back at its revision from before the rollout
    aborted            stopped for good by an operator or a deleted version

The document (``Rollout``) is what ``chalicelib.rollout.store`` keeps next to
the alias; every change here returns a new one, or raises InvalidRolloutError
naming the state that forbids it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from chalicelib.clock import iso_timestamp
from chalicelib.errors import InvalidRolloutError

STEPPING = "stepping"
HOLDING = "holding"
PAUSED = "paused"
AWAITING_APPROVAL = "awaiting_approval"
COMPLETED = "completed"
ROLLED_BACK = "rolled_back"
ABORTED = "aborted"
# States the evaluator looks at; paused ones wait for an operator.
EVALUATED = frozenset({STEPPING, HOLDING})
ACTIVE = EVALUATED | {PAUSED, AWAITING_APPROVAL}
FINISHED = frozenset({COMPLETED, ROLLED_BACK, ABORTED})

DEFAULT_STEPS = (10.0, 25.0, 50.0, 100.0)
# A rollout is looked at this often at most (and at least once an interval).
LONGEST_CHECK = timedelta(minutes=1)

_DURATION = re.compile(r"^([0-9]+)([smh])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600}
_PERCENT = re.compile(r"^([0-9]+(?:\.[0-9]+)?)%?$")


def parse_duration(text: str) -> timedelta:
    """'90s', '5m', '1h' -> the duration; InvalidRolloutError otherwise."""
    match = _DURATION.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise InvalidRolloutError(f"{text!r} is not a duration like 90s, 5m or 1h")
    return timedelta(seconds=int(match.group(1)) * _SECONDS[match.group(2)])


def parse_percent(text: str) -> float:
    """'1%', '0.5%' or '1' -> that percentage as a fraction (0.01)."""
    match = _PERCENT.match(text.strip())
    if match is None or float(match.group(1)) > 100:
        raise InvalidRolloutError(f"{text!r} is not a percentage like 1% or 0.5%")
    return float(match.group(1)) / 100.0


def plan_steps(
    steps: str | None = None, canary: float | None = None, linear: float | None = None
) -> tuple[float, ...]:
    """The step percentages from one of ``--steps 10,25,50,100``, ``--canary 10``
    (that much, then 100) or ``--linear 10`` (10, 20, ... 100); the default
    10, 25, 50, 100. InvalidRolloutError for more than one, or a bad one."""
    given = [option for option in (steps, canary, linear) if option is not None]
    if len(given) > 1:
        raise InvalidRolloutError("give one of --steps, --canary and --linear")
    if steps is not None:
        try:
            return tuple(float(part) for part in steps.split(","))
        except ValueError:
            raise InvalidRolloutError(
                f"steps {steps!r} are not percentages like 10,25,50,100"
            ) from None
    if canary is not None:
        return (float(canary), 100.0)
    if linear is not None:
        if not 0 < linear <= 100:
            raise InvalidRolloutError(f"a linear step of {linear} % is not in (0, 100]")
        count = int(-(-100 // linear))
        return tuple(min(100.0, linear * (n + 1)) for n in range(count))
    return DEFAULT_STEPS


@dataclass(frozen=True)
class Guardrails:
    """What the target must not break, and the sample each step needs.

    ``max_error_rate`` is a fraction (0.01 is 1 %); ``max_p99_ms`` and
    ``max_latency_ratio`` (target's median over the others') are None when not
    checked; ``min_requests`` is what the target must answer in a step before
    the step may advance."""

    max_error_rate: float = 0.01
    max_p99_ms: float | None = None
    max_latency_ratio: float | None = 1.5
    min_requests: int = 200


@dataclass(frozen=True)
class Plan:
    steps: tuple[float, ...] = DEFAULT_STEPS
    interval_seconds: float = 300.0
    timeout_seconds: float = 3600.0
    gate: bool = False
    guardrails: Guardrails = field(default_factory=Guardrails)

    @property
    def check_seconds(self) -> float:
        """How long between two evaluations of a step."""
        return min(self.interval_seconds, LONGEST_CHECK.total_seconds())


def validate_plan(plan: Plan, current_share: float) -> None:
    """Pure checks of a plan for a target now at ``current_share`` % of the
    alias; InvalidRolloutError names the rule broken."""
    steps = plan.steps
    if not steps:
        raise InvalidRolloutError("give at least one step")
    if any(not 0 < step <= 100 for step in steps):
        raise InvalidRolloutError(f"steps {_listed(steps)} must each be in (0, 100]")
    if any(later <= earlier for earlier, later in itertools.pairwise(steps)):
        raise InvalidRolloutError(f"steps {_listed(steps)} must increase")
    if steps[-1] != 100:
        raise InvalidRolloutError(f"steps {_listed(steps)} must end at 100")
    if current_share >= 100:
        raise InvalidRolloutError("the target already serves 100 % of the alias")
    if steps[0] <= current_share:
        raise InvalidRolloutError(
            f"the first step ({_listed(steps[:1])} %) must be above the target's "
            f"current share of {_listed((current_share,))} %"
        )
    if plan.interval_seconds <= 0 or plan.timeout_seconds < plan.interval_seconds:
        raise InvalidRolloutError(
            "the interval must be positive and the timeout at least one interval"
        )
    rails = plan.guardrails
    if not 0 <= rails.max_error_rate <= 1 or rails.min_requests < 1:
        raise InvalidRolloutError(
            "the error rate limit must be a percentage and --min-requests at least 1"
        )
    if rails.max_p99_ms is not None and rails.max_p99_ms <= 0:
        raise InvalidRolloutError("the p99 limit must be a positive number of ms")
    if rails.max_latency_ratio is not None and rails.max_latency_ratio <= 1:
        raise InvalidRolloutError("the latency ratio limit must be above 1")


def step_weights(
    before: Mapping[int, float], target: int, percent: float
) -> dict[int, float]:
    """The alias's weights at a step: ``percent`` to ``target``, the rest to the
    other versions in the proportions ``before`` gave them (percentages that sum
    to 100). Only keys moving to the target change version."""
    others = {v: w for v, w in before.items() if v != target and w > 0}
    total = sum(others.values())
    if percent >= 100 or total <= 0:
        return {target: 100}
    weights: dict[int, float] = {
        version: _plain(weight * (100 - percent) / total)
        for version, weight in others.items()
    }
    weights[target] = _plain(percent)
    return dict(sorted(weights.items()))


def share_of(weights: Mapping[int, float], version: int) -> float:
    """``version``'s share of ``weights`` in percent."""
    total = sum(w for w in weights.values() if w > 0)
    return 100.0 * max(0.0, weights.get(version, 0.0)) / total if total else 0.0


@dataclass(frozen=True)
class Rollout:
    """One rollout of ``name@alias`` to ``target``: its plan and where it is.

    ``base_revision`` and ``base_weights`` are the alias before the rollout (what
    a rollback restores); ``alias_revision_id`` the alias revision this rollout
    wrote last (anything else there means someone changed the alias);
    ``step`` indexes ``plan.steps`` (-1 before the first step is written).
    Times are ISO 8601 strings."""

    name: str
    alias: str
    target: int
    plan: Plan
    state: str
    step: int
    rollout_id: str
    started_at: str
    step_started_at: str
    next_evaluation_at: str
    base_revision: int
    base_weights: dict[int, float]
    alias_revision: int
    alias_revision_id: str
    actor: str
    reason: str = ""
    evaluations: int = 0
    last_decision: dict[str, Any] | None = None

    @property
    def percent(self) -> float:
        """The target's share at the current step (0 before the first)."""
        return self.plan.steps[self.step] if self.step >= 0 else 0.0

    @property
    def weights(self) -> dict[int, float]:
        """The alias's weights at the current step."""
        if self.step < 0:
            return dict(self.base_weights)
        return step_weights(self.base_weights, self.target, self.percent)

    @property
    def is_last_step(self) -> bool:
        return self.step == len(self.plan.steps) - 1

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["base_weights"] = {
            str(v): w for v, w in sorted(self.base_weights.items())
        }
        document["plan"]["steps"] = list(self.plan.steps)
        return document

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rollout:
        plan = dict(data["plan"])
        guardrails = Guardrails(**plan.pop("guardrails"))
        return cls(
            **{
                **data,
                "plan": Plan(
                    **{**plan, "steps": tuple(plan["steps"])}, guardrails=guardrails
                ),
                "base_weights": {int(v): w for v, w in data["base_weights"].items()},
            }
        )

    # -- moves ---------------------------------------------------------------

    def require_state(self, states: frozenset[str] | set[str], action: str) -> None:
        """InvalidRolloutError unless the rollout is in one of ``states``."""
        if self.state not in states:
            raise InvalidRolloutError(
                f"cannot {action} the rollout of {self.name}@{self.alias}: it is "
                f"{self.state.replace('_', ' ')}"
            )

    def evaluated(self, now: datetime, decision: Mapping[str, Any]) -> Rollout:
        """Counted one more evaluation, the next one due a check later."""
        return replace(
            self,
            evaluations=self.evaluations + 1,
            last_decision=dict(decision),
            next_evaluation_at=iso_timestamp(
                now + timedelta(seconds=self.plan.check_seconds)
            ),
        )

    def stepped(
        self, now: datetime, revision: int, revision_id: str, reason: str
    ) -> Rollout:
        """At the next step, written as alias revision ``revision``."""
        self.require_state(EVALUATED | {AWAITING_APPROVAL}, "advance")
        step = self.step + 1
        done = step == len(self.plan.steps) - 1
        return replace(
            self,
            step=step,
            state=COMPLETED if done else STEPPING,
            step_started_at=iso_timestamp(now),
            next_evaluation_at=iso_timestamp(
                now + timedelta(seconds=self.plan.check_seconds)
            ),
            alias_revision=revision,
            alias_revision_id=revision_id,
            reason=reason,
        )

    def needs_approval(self) -> bool:
        """Whether the next step waits for ``approve`` (the gate, before the last)."""
        return self.plan.gate and self.step + 1 == len(self.plan.steps) - 1

    def moved_to(self, state: str, reason: str) -> Rollout:
        """In ``state`` for ``reason`` (no alias change)."""
        return replace(self, state=state, reason=reason)

    def paused(self, reason: str) -> Rollout:
        self.require_state(EVALUATED | {AWAITING_APPROVAL}, "pause")
        return self.moved_to(PAUSED, reason)

    def resumed(
        self, now: datetime, revision: int, revision_id: str, reason: str
    ) -> Rollout:
        """Stepping again from the alias as it is now (revision ``revision``); the
        step's window starts afresh."""
        self.require_state({PAUSED}, "resume")
        return replace(
            self,
            state=STEPPING,
            step_started_at=iso_timestamp(now),
            next_evaluation_at=iso_timestamp(now),
            alias_revision=revision,
            alias_revision_id=revision_id,
            reason=reason,
        )

    def finished(
        self, state: str, reason: str, revision: int, revision_id: str
    ) -> Rollout:
        """Rolled back or aborted, the alias restored as revision ``revision``."""
        self.require_state(ACTIVE, state.replace("_", " ").removesuffix("ed"))
        return replace(
            self,
            state=state,
            reason=reason,
            alias_revision=revision,
            alias_revision_id=revision_id,
        )


def _plain(value: float) -> float:
    return int(value) if float(value).is_integer() else value


def _listed(steps: tuple[float, ...]) -> str:
    return ",".join(f"{_plain(step):g}" for step in steps)
