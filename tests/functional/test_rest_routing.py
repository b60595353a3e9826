"""Which version answers over HTTP: paths, aliases, routing keys, the weighted
split, shadows, integrity failures and the alias cache."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import TYPE_CHECKING, Any, BinaryIO

import pytest
from chalice.test import Client, HTTPResponse
from scipy.stats import chisquare

from chalicelib import wiring
from chalicelib.aliases.document import Shadow
from chalicelib.aliases.store import AliasStore
from chalicelib.layout import version_prefix
from chalicelib.registry.manifest import Manifest
from chalicelib.registry.versions import Registry
from chalicelib.traffic import choose_version
from tests.demo_support import MODEL_BUCKET
from tests.emf_support import emf_lines
from tests.functional.rest_support import (
    IRIS_ROWS,
    FakeClock,
    post_json,
    served_by,
    serving_client,
    v2_request,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def tamper(s3: S3Client, name: str, version: int) -> None:
    """Replace a version's artifact behind the registry's back."""
    s3.put_object(
        Bucket=MODEL_BUCKET,
        Key=version_prefix(name, version) + "model.onnx",
        Body=b"not the model that was registered",
    )


def infer(
    client: Client,
    path: str = "/v2/models/iris/infer",
    *,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> HTTPResponse:
    """A V2 request for the two iris rows, with extra ``body`` fields."""
    return post_json(client, path, v2_request(IRIS_ROWS, **(body or {})), headers)


def records(capsys: pytest.CaptureFixture[str]) -> dict[str, list[dict[str, Any]]]:
    """The EMF lines written to stdout so far, by event, once the work that
    follows the answers is done."""
    wiring.container().wait_for_background_work()
    found: dict[str, list[dict[str, Any]]] = {}
    for line in emf_lines(capsys.readouterr().out):
        found.setdefault(line["event"], []).append(line)
    return found


# -- explicit versions -----------------------------------------------------------------


def test_an_explicit_version_is_served_without_any_weight(
    client: Client, aliases: AliasStore
) -> None:
    aliases.set_routing("iris", "prod", {1: 100}, actor="tests")
    response = infer(client, "/v2/models/iris/versions/2/infer")
    assert response.status_code == 200
    assert served_by(response) == ("iris", "2", "")
    assert response.json_body["model_version"] == "2"


def test_an_explicit_version_wins_over_an_alias(client: Client) -> None:
    response = infer(
        client,
        "/v2/models/iris/versions/2/infer",
        body={"parameters": {"alias": "prod"}},
        headers={"X-Turnout-Alias": "prod"},
    )
    assert served_by(response) == ("iris", "2", "")


def test_unknown_model_or_version_is_404(client: Client) -> None:
    cases = [
        ("/v2/models/iris/versions/3/infer", "model 'iris' has no version 3"),
        ("/v2/models/nope/versions/1/infer", "model 'nope' not found"),
        ("/v2/models/nope/infer", "model 'nope' not found"),
        ("/models/nope/predict", "model 'nope' not found"),
    ]
    answers = [infer(client, path) for path, _ in cases]
    assert [(answer.status_code, answer.json_body) for answer in answers] == [
        (404, {"error": error}) for _, error in cases
    ]


# -- aliases ---------------------------------------------------------------------------


def test_without_an_alias_the_stage_default_answers(client: Client) -> None:
    response = infer(client)
    assert served_by(response)[2] == "prod"


def test_unknown_alias_is_404(client: Client) -> None:
    answers = [
        infer(client, body={"parameters": {"alias": "gone"}}),
        infer(client, "/v2/models/iris/infer?alias=gone"),
        infer(client, headers={"X-Turnout-Alias": "gone"}),
        post_json(client, "/models/iris/predict?alias=gone", {"instances": IRIS_ROWS}),
        post_json(
            client,
            "/models/iris/predict",
            {"instances": IRIS_ROWS},
            {"X-Turnout-Alias": "gone"},
        ),
    ]
    assert [(answer.status_code, answer.json_body) for answer in answers] == [
        (404, {"error": "model 'iris' has no alias 'gone'"})
    ] * len(answers)


def test_alias_precedence_is_parameters_then_query_then_header(
    client: Client, aliases: AliasStore
) -> None:
    aliases.set_routing("iris", "one", {1: 100}, actor="tests")
    aliases.set_routing("iris", "two", {2: 100}, actor="tests")
    header = {"X-Turnout-Alias": "two"}
    assert served_by(infer(client, headers=header))[1:] == ("2", "two")
    by_query = infer(client, "/v2/models/iris/infer?alias=one", headers=header)
    assert served_by(by_query)[1:] == ("1", "one")
    by_parameters = infer(
        client,
        "/v2/models/iris/infer?alias=one",
        headers=header,
        body={"parameters": {"alias": "two"}},
    )
    assert served_by(by_parameters)[1:] == ("2", "two")


def test_an_invalid_alias_name_is_400(client: Client) -> None:
    response = infer(client, headers={"X-Turnout-Alias": "Prod!"})
    assert response.status_code == 400
    assert response.json_body == {
        "error": "invalid alias name 'Prod!': use lowercase letters, digits, '-', "
        "'_' and '.', starting with a letter or digit"
    }


# -- routing keys and the weighted split -----------------------------------------------


def test_a_routing_key_always_gets_the_same_version(client: Client) -> None:
    weights = {1: 90, 2: 10}
    for key in (f"user-{i}" for i in range(12)):
        expected = str(choose_version(weights, key, random.random))
        by_header = [
            served_by(infer(client, headers={"X-Routing-Key": key}))[1]
            for _ in range(3)
        ]
        by_parameter = served_by(
            infer(client, body={"parameters": {"routing_key": key}})
        )[1]
        assert by_header == [expected] * 3
        assert by_parameter == expected


def test_routing_keys_reach_every_weighted_version(client: Client) -> None:
    versions = {
        served_by(infer(client, headers={"X-Routing-Key": f"user-{i}"}))[1]
        for i in range(60)
    }
    assert versions == {"1", "2"}


def test_without_a_key_the_split_follows_the_weights(
    client: Client, aliases: AliasStore
) -> None:
    aliases.set_routing("iris", "prod", {1: 70, 2: 30}, actor="tests")
    random.seed(20240601)  # the predictor draws from the module's random source
    requests = 300
    counts = Counter(served_by(infer(client))[1] for _ in range(requests))
    observed = [counts["1"], counts["2"]]
    assert sum(observed) == requests
    assert chisquare(observed, [0.7 * requests, 0.3 * requests]).pvalue > 0.001
    # The same counts against a 50/50 split are refused: the test can fail.
    assert chisquare(observed, [0.5 * requests, 0.5 * requests]).pvalue < 0.001


# -- shadows ---------------------------------------------------------------------------


def test_a_shadow_answer_is_logged_never_returned(
    client: Client, aliases: AliasStore, capsys: pytest.CaptureFixture[str]
) -> None:
    aliases.set_routing("iris", "prod", {1: 100}, shadow=Shadow(2, 100), actor="tests")
    response = infer(client, body={"id": "client-7"})
    assert response.status_code == 200
    assert served_by(response) == ("iris", "1", "prod")
    assert response.json_body["model_version"] == "1"
    written = records(capsys)
    (shadow,) = written["shadow"]
    request_id = response.headers["X-Request-Id"]
    assert {
        key: shadow[key]
        for key in ("request_id", "Model", "Version", "primary_version", "Alias")
    } == {
        "request_id": request_id,
        "Model": "iris",
        "Version": "2",
        "primary_version": 1,
        "Alias": "prod",
    }
    assert (shadow["ShadowErrors"], shadow["outcome"]) == (0, "ok")
    assert shadow["ShadowLatency"] > 0
    assert 0 <= shadow["ShadowDisagreement"] <= 100
    (prediction,) = written["prediction"]
    assert (prediction["request_id"], prediction["shadow_version"]) == (request_id, 2)


def test_a_failing_shadow_never_touches_the_answer(
    client: Client,
    aliases: AliasStore,
    s3: S3Client,
    capsys: pytest.CaptureFixture[str],
) -> None:
    aliases.set_routing("iris", "prod", {1: 100}, shadow=Shadow(2, 100), actor="tests")
    tamper(s3, "iris", 2)
    unshadowed = infer(client, "/v2/models/iris/versions/1/infer")
    response = infer(client)
    assert response.status_code == 200
    assert served_by(response) == ("iris", "1", "prod")
    assert response.json_body["outputs"] == unshadowed.json_body["outputs"]
    (shadow,) = records(capsys)["shadow"]
    assert (shadow["ShadowErrors"], shadow["outcome"]) == (1, "server_error")
    assert shadow["request_id"] == response.headers["X-Request-Id"]
    assert "failed its integrity check" in shadow["error"]


def test_a_shadow_whose_manifest_is_gone_never_touches_the_answer(
    client: Client,
    aliases: AliasStore,
    s3: S3Client,
    capsys: pytest.CaptureFixture[str],
) -> None:
    aliases.set_routing("iris", "prod", {1: 100}, shadow=Shadow(2, 100), actor="tests")
    s3.delete_object(Bucket=MODEL_BUCKET, Key="models/iris/versions/2/manifest.json")
    response = infer(client)
    assert response.status_code == 200
    assert served_by(response) == ("iris", "1", "prod")
    (shadow,) = records(capsys)["shadow"]
    assert (shadow["Version"], shadow["ShadowErrors"]) == ("2", 1)
    assert shadow["error"] == "model 'iris' has no version 2"


# -- integrity -------------------------------------------------------------------------


def test_a_tampered_version_is_503_and_only_that_version(
    client: Client, s3: S3Client
) -> None:
    tamper(s3, "iris", 2)
    response = infer(client, "/v2/models/iris/versions/2/infer")
    assert response.status_code == 503
    assert response.json_body["error"].startswith(
        "version 2 of 'iris' failed its integrity check: artifact is 33 bytes, "
        "manifest says "
    )
    ready = client.http.get("/v2/models/iris/versions/2/ready")
    assert ready.status_code == 503
    assert infer(client, "/v2/models/iris/versions/1/infer").status_code == 200
    assert client.http.get("/v2/models/iris/versions/1/ready").status_code == 200
    alias_ready = client.http.get("/v2/models/iris/ready")
    assert alias_ready.status_code == 503  # prod gives version 2 weight


# -- the alias cache -------------------------------------------------------------------


def test_an_alias_change_shows_after_the_cache_time(
    request: pytest.FixtureRequest, aliases: AliasStore
) -> None:
    ttl = 5.0
    clock = FakeClock()
    for client in serving_client(request, clock=clock, alias_cache_seconds=ttl):
        aliases.set_routing("iris", "prod", {1: 100}, actor="tests")
        assert served_by(infer(client))[1] == "1"
        aliases.set_routing("iris", "prod", {2: 100}, actor="tests")
        clock.advance(ttl - 0.001)
        assert served_by(infer(client))[1] == "1"  # still the cached copy
        clock.advance(0.001)
        assert served_by(infer(client))[1] == "2"
        clock.advance(ttl)
        assert served_by(infer(client))[1] == "2"  # revalidated, unchanged


def test_the_dev_stage_caches_aliases_for_at_most_five_seconds(client: Client) -> None:
    infer(client)
    assert 0 < wiring.settings().alias_cache_seconds <= 5


def test_a_version_of_thousands_of_digits_is_400(client: Client) -> None:
    response = client.http.get(f"/v2/models/iris/versions/{'9' * 5000}/ready")
    assert response.status_code == 400
    assert response.json_body == {
        "error": "invalid version name '99999999999999999999...': 5000 characters, "
        "a version has at most 18 digits"
    }


def test_a_corrupt_manifest_is_503_for_that_version_only(
    client: Client, s3: S3Client
) -> None:
    key = version_prefix("iris", 2) + "manifest.json"
    stored = s3.get_object(Bucket=MODEL_BUCKET, Key=key)["Body"].read()
    s3.put_object(Bucket=MODEL_BUCKET, Key=key, Body=stored[: len(stored) // 2])
    expected = {
        "error": "version 2 of 'iris' failed its integrity check: "
        "manifest.json is not valid JSON"
    }
    for response in (
        infer(client, "/v2/models/iris/versions/2/infer"),
        client.http.get("/v2/models/iris/versions/2/ready"),
        client.http.get("/v2/models/iris/versions/2"),
    ):
        assert (response.status_code, response.json_body) == (503, expected)
    assert infer(client, "/v2/models/iris/versions/1/infer").status_code == 200
    assert client.http.get("/v2/models/iris/versions/1").status_code == 200


def test_a_signature_edited_in_the_manifest_is_503(
    client: Client, s3: S3Client
) -> None:
    key = version_prefix("iris", 1) + "manifest.json"
    stored = json.loads(s3.get_object(Bucket=MODEL_BUCKET, Key=key)["Body"].read())
    stored["inputs"][0]["shape"] = [-1, 5]
    s3.put_object(Bucket=MODEL_BUCKET, Key=key, Body=json.dumps(stored).encode())
    five = post_json(
        client,
        "/v2/models/iris/versions/1/infer",
        v2_request([[5.1, 3.5, 1.4, 0.2, 1.0]]),
    )
    assert (five.status_code, five.json_body) == (
        503,
        {
            "error": "version 1 of 'iris' failed its integrity check: the "
            "manifest's input 'float_input' FP32 [-1, 5] differs from the model's "
            "'float_input' FP32 [-1, 4]"
        },
    )
    assert infer(client, "/v2/models/iris/versions/2/infer").status_code == 200


def test_a_deleted_version_stops_answering_where_it_is_no_longer_listed(
    request: pytest.FixtureRequest, aliases: AliasStore
) -> None:
    for client in serving_client(request, manifest_cache_seconds=0):
        aliases.set_routing("iris", "prod", {1: 100}, actor="tests")
        assert infer(client, "/v2/models/iris/versions/2/infer").status_code == 200
        aliases.delete_version("iris", 2)
        listed = client.http.get("/v2/models/iris")
        assert listed.json_body["versions"] == ["1"]
        for response in (
            infer(client, "/v2/models/iris/versions/2/infer"),
            client.http.get("/v2/models/iris/versions/2"),
            client.http.get("/v2/models/iris/versions/2/ready"),
        ):
            assert (response.status_code, response.json_body) == (
                404,
                {"error": "model 'iris' has no version 2"},
            )


def test_a_tampered_version_is_not_downloaded_again_for_each_request(
    client: Client, s3: S3Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    tamper(s3, "iris", 2)
    fetched: list[int] = []
    fetch = Registry.open_artifact

    def counting(self: Registry, manifest: Manifest) -> BinaryIO:
        fetched.append(manifest.version)
        return fetch(self, manifest)

    monkeypatch.setattr(Registry, "open_artifact", counting)
    for _ in range(3):
        response = infer(client, "/v2/models/iris/versions/2/infer")
        assert response.status_code == 503
    assert infer(client, "/v2/models/iris/versions/1/infer").status_code == 200
    assert fetched == [2, 1]


def test_the_readme_routing_keys_land_where_the_readme_says(client: Client) -> None:
    # iris@prod is 1:90 2:10 in the demo registry, as in make dev.
    answered = {
        key: served_by(infer(client, headers={"X-Routing-Key": key}))[1]
        for key in ("customer-42", "customer-7")
    }
    assert answered == {"customer-42": "1", "customer-7": "2"}
