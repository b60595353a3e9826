"""Deployed, every route but the health probes needs an API key; chalice local
and the test client, as for development, need none."""

from __future__ import annotations

from chalice.test import Client

from app import app
from tests.demo_support import ROOT

HEALTH = ("/v2/health/live", "/v2/health/ready")


def test_every_route_but_health_requires_an_api_key() -> None:
    required = {
        (path, method): entry.api_key_required
        for path, methods in app.routes.items()
        for method, entry in methods.items()
    }

    assert {route for route, keyed in required.items() if not keyed} == {
        (path, "GET") for path in HEALTH
    }
    # The V2 routes, /models/{name}/predict and /models/{name}/feedback.
    assert ("/models/{name}/feedback", "POST") in required
    assert len(required) == 11


def test_the_local_app_answers_a_keyed_route_without_a_key() -> None:
    with Client(app, stage_name="dev", project_dir=str(ROOT)) as client:
        response = client.http.get("/v2")

    assert response.status_code == 200
    assert response.json_body["extensions"] == ["binary_tensor_data"]
