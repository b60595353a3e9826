"""Helpers for the REST tests: a Chalice test client on fresh per-test wiring."""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from chalice.test import Client, HTTPResponse

from app import app
from chalicelib import sessions as models
from chalicelib import wiring
from chalicelib.registry import versions as registry_module
from tests.demo_support import ROOT

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def serving_client(
    request: pytest.FixtureRequest,
    clock: Callable[[], float] | None = None,
    **changes: Any,
) -> Iterator[Client]:
    """A test client on the dev stage, over the demo registry, whose container
    state starts empty, with a seeded random source and ``clock`` (monotonic
    seconds) for its caches.

    The stage's environment (``.chalice/config.json``) is applied per request and
    wins over the test's own, so the model cache directory (and any ``changes``)
    are set on the settings themselves: each test gets its own /tmp.
    """
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    cache_dir = request.getfixturevalue("tmp_path") / "models"
    remember_inspections(monkeypatch)
    request.getfixturevalue("demo_registry")

    wired = wiring.Container(
        overrides={"model_cache_dir": str(cache_dir), **changes},
        s3=request.getfixturevalue("s3"),
        clock=clock or time.monotonic,
        rng=random.Random(0),
    )
    wiring.install(wired)
    with Client(app, stage_name="dev", project_dir=str(ROOT)) as client:
        yield client
    # Write what the buffers hold (and stop their timers) while moto still runs.
    wired.flush_evidence()
    wired.wait_for_background_work()
    wiring.reset()


_INSPECTED: dict[bytes, models.ModelInfo] = {}


def remember_inspections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registering opens the model with onnxruntime to read its signature: most of
    the demo registry's cost. The demo models never change: read each once."""
    inspect = models.inspect_model

    def remembered(data: bytes) -> models.ModelInfo:
        key = hashlib.sha256(data).digest()
        if key not in _INSPECTED:
            _INSPECTED[key] = inspect(data)
        return _INSPECTED[key]

    monkeypatch.setattr(registry_module, "inspect_model", remembered)


def post_json(
    client: Client, path: str, document: Any, headers: dict[str, str] | None = None
) -> HTTPResponse:
    return client.http.post(
        path,
        body=json.dumps(document).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def v2_request(rows: list[list[float]], **extra: Any) -> dict[str, Any]:
    """A V2 request for the iris and diabetes models' one FP32 input."""
    return {
        "inputs": [
            {
                "name": "float_input",
                "shape": [len(rows), len(rows[0])],
                "datatype": "FP32",
                "data": rows,
            }
        ],
        **extra,
    }


def served_by(response: HTTPResponse) -> tuple[str, str, str]:
    """The X-Model-Name, X-Model-Version and X-Model-Alias of an answer."""
    headers = response.headers
    return headers["X-Model-Name"], headers["X-Model-Version"], headers["X-Model-Alias"]


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
