"""Shadow runs: the version an alias copies traffic to runs on the same inputs
after the caller has been answered, and reports how it compares.

An observer: it sees each answered request whose alias sampled a shadow version
and submits the run to the after-response work (``chalicelib.background``), so
neither the shadow's manifest read nor its run costs the caller anything. The
outcome is a SHADOW Observation (the shadow's version, the primary it was
compared with, its latency, its agreement or its error) handed to ``report``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

from chalicelib.background import BackgroundWork
from chalicelib.observe import OK, REST, SERVER_ERROR, SHADOW, Observation
from chalicelib.predictor import Predictor, Target, agreement


class ShadowRuns:
    """Runs sampled shadows after the answer; see the module docstring."""

    def __init__(
        self,
        predictor: Predictor,
        work: BackgroundWork,
        report: Callable[[Observation], None],
        *,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._predictor = predictor
        self._work = work
        self._report = report
        self._clock = clock

    def observe(self, observation: Observation) -> None:
        """Submit the shadow run of an answered REST request that sampled one."""
        if (
            observation.source == REST
            and observation.shadow_version is not None
            and observation.outcome == OK
            and observation.inputs is not None
            and observation.outputs is not None
        ):
            self._work.submit(functools.partial(self.run, observation))

    def run(self, request: Observation) -> None:
        """Run the shadow of ``request`` and report it; never raises."""
        assert request.shadow_version is not None and request.version is not None
        assert request.inputs is not None and request.outputs is not None
        result = Observation(
            SHADOW,
            request.request_id,
            model=request.model,
            version=request.shadow_version,
            alias=request.alias,
            primary_version=request.version,
            rows=request.rows,
        )
        started = self._clock()
        try:
            predictor = self._predictor
            shadow = predictor.manifest(request.model, request.shadow_version)
            primary = predictor.manifest(request.model, request.version)
            # A plain dict: the inputs were checked against the primary's
            # signature, and the shadow's must check them again.
            inputs = dict(request.inputs)
            prediction = predictor.run(Target(shadow, alias=None), inputs)
            result.model_ms = prediction.latency_ms
            result.agreement = agreement(
                primary, request.outputs, shadow, prediction.outputs
            )
        except Exception as error:
            result.outcome = SERVER_ERROR
            result.status = 500
            result.error = str(error) or type(error).__name__
        result.latency_ms = (self._clock() - started) * 1000.0
        self._report(result)
