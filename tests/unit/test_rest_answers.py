"""The REST layer's one error table and its plain request and response. No I/O."""

from __future__ import annotations

import logging
from typing import Any, cast

import pytest

from chalicelib import errors, rest
from chalicelib.config import Settings
from chalicelib.dataplane import DataPlane
from chalicelib.errors import TurnoutError
from chalicelib.observe import CLIENT_ERROR, SERVER_ERROR, Observation, Observers


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.InvalidInputError("inputs[0].data", "bad"), 400),
        (errors.InvalidNameError("model", "X", "uppercase"), 400),
        (errors.InvalidAliasError("weights"), 400),
        (errors.InvalidModelError("truncated"), 400),
        (errors.ModelNotFoundError("iris"), 404),
        (errors.VersionNotFoundError("iris", 9), 404),
        (errors.AliasNotFoundError("iris", "gone"), 404),
        (errors.RevisionNotFoundError("iris", "prod", 4), 404),
        (errors.AliasConflictError("iris", "prod", 3), 409),
        (errors.VersionInUseError("iris", 1, ["prod"]), 409),
        (errors.PayloadTooLargeError(7, 6), 413),
        (errors.TooManyRowsError("instances", 11, 10), 413),
        (errors.ModelTooLargeError(7, 6), 413),
        (errors.UnsupportedMediaTypeError("text/plain", ["application/json"]), 415),
        (errors.ModelExecutionError("iris", 1, "boom"), 500),
        (errors.ModelIntegrityError("iris", 2, "sha256 differs"), 503),
    ],
)
def test_each_domain_error_has_its_status(error: TurnoutError, status: int) -> None:
    assert rest.error_status(error) == status


def test_an_error_outside_the_table_has_no_status() -> None:
    class NewError(TurnoutError):
        pass

    assert rest.error_status(NewError("new")) is None


def test_headers_are_found_whatever_their_case() -> None:
    request = rest.Request(headers={"x-routing-key": "a", "Content-Type": "b"})
    assert request.header("X-Routing-Key") == "a"
    assert request.header("content-type") == "b"
    assert request.header("X-Turnout-Alias") is None


class FailingPlane:
    """A data plane that names version 2 as the one answering, then fails."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def metadata(self, name: str, **_: Any) -> Any:
        raise self.error

    def infer(self, name: str, document: Any, **options: Any) -> Any:
        observation: Observation = options["observation"]
        observation.version = 2
        raise self.error


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Observation] = []

    def observe(self, observation: Observation) -> None:
        self.seen.append(observation)


def api_over(error: Exception, recorder: Recorder | None = None) -> rest.RestApi:
    plane = cast(DataPlane, FailingPlane(error))
    observers = Observers([recorder] if recorder else [])
    return rest.RestApi(plane, Settings(model_bucket="models"), observers)


def failing(error: Exception) -> rest.Handler:
    return api_over(error).model_metadata


def test_a_mapped_error_becomes_its_status_and_message() -> None:
    response = failing(errors.AliasNotFoundError("iris", "gone"))(
        rest.Request(path_params={"name": "iris"}, request_id="r1")
    )
    assert (response.status, response.body) == (
        404,
        {"error": "model 'iris' has no alias 'gone'"},
    )
    assert response.headers == {
        "Content-Type": "application/json",
        "X-Request-Id": "r1",
    }


@pytest.mark.parametrize(
    "error",
    [RuntimeError("password=hunter2"), type("OddError", (TurnoutError,), {})("x")],
    ids=["exception", "unmapped domain error"],
)
def test_anything_else_is_a_logged_bare_500(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    response = failing(error)(
        rest.Request(path_params={"name": "iris"}, request_id="r2")
    )
    assert (response.status, response.body) == (500, {"error": "internal error"})
    (record,) = [r for r in caplog.records if r.name == "turnout.rest"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and record.exc_info[1] is error
    assert "r2" in record.getMessage()


def test_a_refused_prediction_is_observed_with_the_version_that_refused_it() -> None:
    recorder = Recorder()
    api = api_over(errors.InvalidInputError("instances[0]", "3 features"), recorder)
    request = rest.Request(
        method="POST",
        path_params={"name": "iris"},
        body=b'{"instances": [[1, 2, 3]]}',
        request_id="r3",
    )
    response = api.predict(request)
    assert response.status == 400
    (seen,) = recorder.seen
    assert (seen.model, seen.version, seen.status, seen.outcome, seen.error) == (
        "iris",
        2,
        400,
        CLIENT_ERROR,
        "instances[0]: 3 features",
    )
    assert seen.latency_ms >= 0


def test_a_failed_prediction_is_observed_as_a_server_error() -> None:
    recorder = Recorder()
    api = api_over(RuntimeError("boom"), recorder)
    request = rest.Request(
        method="POST", path_params={"name": "iris"}, body=b"{}", request_id="r4"
    )
    assert api.predict(request).status == 500
    (seen,) = recorder.seen
    assert (seen.status, seen.outcome, seen.error) == (
        500,
        SERVER_ERROR,
        "internal error",
    )


def test_metadata_requests_are_not_observed_as_predictions() -> None:
    recorder = Recorder()
    api = api_over(errors.ModelNotFoundError("iris"), recorder)
    request = rest.Request(path_params={"name": "iris"}, request_id="r5")
    assert api.model_metadata(request).status == 404
    assert recorder.seen == []


def test_a_failing_observer_never_fails_the_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        def observe(self, observation: Observation) -> None:
            raise OSError("disk full")

    recorder = Recorder()
    observers = Observers([Broken(), recorder])
    observers.observe(Observation("rest", "r6"))
    assert [seen.request_id for seen in recorder.seen] == ["r6"]
    (record,) = [r for r in caplog.records if r.name == "turnout.predictions"]
    assert "Broken failed on request r6" in record.getMessage()
