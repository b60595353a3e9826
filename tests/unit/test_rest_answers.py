"""The REST layer's one error table and its plain request and response. No I/O."""

from __future__ import annotations

import logging

import pytest

from chalicelib import errors, rest
from chalicelib.errors import TurnoutError


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


def failing(error: Exception) -> rest.Handler:
    @rest._answers
    def handler(request: rest.Request) -> rest.Response:
        raise error

    return handler


def test_a_mapped_error_becomes_its_status_and_message() -> None:
    response = failing(errors.AliasNotFoundError("iris", "gone"))(
        rest.Request(request_id="r1")
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
    response = failing(error)(rest.Request(request_id="r2"))
    assert (response.status, response.body) == (500, {"error": "internal error"})
    (record,) = [r for r in caplog.records if r.name == "turnout.rest"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and record.exc_info[1] is error
    assert "r2" in record.getMessage()
