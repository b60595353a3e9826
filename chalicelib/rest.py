"""The REST protocols over the prediction core, without a web framework.

Open Inference Protocol (KServe V2) routes and the simple ``instances`` route. Each
handler takes a plain Request and returns a plain Response; ``app.py`` converts
Chalice's. ERROR_STATUS is the one table from domain errors to status codes:
anything else is logged with its traceback and answered with a bare 500.

Who answers: the version in the path, else the alias named by ``parameters.alias``
(V2 body), ``?alias=`` or the ``X-Turnout-Alias`` header (in that order), else the
stage's default alias; the routing key is ``parameters.routing_key``, else the
``X-Routing-Key`` header. Successful answers name the version in X-Model-Name,
X-Model-Version and X-Model-Alias (empty when the path named the version).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chalicelib import payloads, wiring
from chalicelib.config import Settings
from chalicelib.errors import (
    AliasConflictError,
    InvalidAliasError,
    InvalidInputError,
    InvalidModelError,
    InvalidNameError,
    ModelExecutionError,
    ModelIntegrityError,
    ModelTooLargeError,
    NotFoundError,
    PayloadTooLargeError,
    TooManyRowsError,
    TurnoutError,
    UnsupportedMediaTypeError,
    VersionInUseError,
)
from chalicelib.names import parse_version
from chalicelib.predict import Target, primary_version
from chalicelib.version_manifest import Manifest

logger = logging.getLogger("turnout.rest")

SERVER_NAME = "turnout"
SERVER_VERSION = "0.1.0"
PLATFORM = "onnxruntime_onnx"

# What a request body may be. No Content-Type at all is read as JSON too;
# octet-stream is what binary-extension clients send (and what API Gateway passes
# through as bytes: it is in Chalice's default binary_types).
ACCEPTED_CONTENT_TYPES = ("application/json", "application/octet-stream")

# The one table: domain error -> HTTP status. The first class that matches wins.
ERROR_STATUS: tuple[tuple[type[TurnoutError], int], ...] = (
    (InvalidInputError, 400),
    (InvalidNameError, 400),
    (InvalidAliasError, 400),
    (InvalidModelError, 400),
    (NotFoundError, 404),
    (AliasConflictError, 409),
    (VersionInUseError, 409),
    # Too many rows is a 413 like too many bytes: the request is too large to
    # answer synchronously, and the remedy is the same (split it, or use batch).
    (PayloadTooLargeError, 413),
    (TooManyRowsError, 413),
    (ModelTooLargeError, 413),
    (UnsupportedMediaTypeError, 415),
    (ModelExecutionError, 500),
    # A version whose artifact fails its check: unavailable, the others still serve.
    (ModelIntegrityError, 503),
)


# Built for every request: a frozen dataclass would cost three times as much.
@dataclass(slots=True)
class Request:
    """What a handler needs from an HTTP request."""

    method: str = "GET"
    path_params: Mapping[str, str] = field(default_factory=dict)
    query_params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    request_id: str = ""

    def __post_init__(self) -> None:
        # Header names are case-insensitive: lower-case them once, not per lookup.
        self.headers = {name.lower(): value for name, value in self.headers.items()}

    def header(self, name: str) -> str | None:
        """A header's value, whatever the case of its name."""
        return self.headers.get(name.lower())


@dataclass(slots=True)
class Response:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Response]


def error_status(error: TurnoutError) -> int | None:
    """The status code ERROR_STATUS gives ``error``; None when it is not mapped."""
    return next(
        (status for kind, status in ERROR_STATUS if isinstance(error, kind)), None
    )


def _answers(handler: Handler) -> Handler:
    """Turn the handler's errors into answers: mapped domain errors into their
    status and message, anything else into a logged, generic 500."""

    @functools.wraps(handler)
    def answer(request: Request) -> Response:
        try:
            response = handler(request)
        except TurnoutError as error:
            status = error_status(error)
            if status is None:
                response = _internal_error(request)
            else:
                if status >= 500:
                    logger.error("request %s: %s", request.request_id, error.message)
                response = Response(status, {"error": error.message})
        except Exception:
            response = _internal_error(request)
        response.headers["Content-Type"] = "application/json"
        response.headers["X-Request-Id"] = request.request_id
        return response

    return answer


def _internal_error(request: Request) -> Response:
    logger.exception(
        "request %s: unhandled error in %s %s",
        request.request_id,
        request.method,
        dict(request.path_params),
    )
    return Response(500, {"error": "internal error"})


# -- health and metadata ---------------------------------------------------------------


@_answers
def live(request: Request) -> Response:
    """GET /v2/health/live: the function answers."""
    return Response(200, {"live": True})


@_answers
def ready(request: Request) -> Response:
    """GET /v2/health/ready: configured to serve (no S3 call: probes stay cheap)."""
    if not wiring.settings().model_bucket:
        return Response(503, {"ready": False, "error": "TURNOUT_MODEL_BUCKET is unset"})
    return Response(200, {"ready": True})


@_answers
def server_metadata(request: Request) -> Response:
    """GET /v2: who serves, and the protocol extensions it supports."""
    return Response(
        200,
        {
            "name": SERVER_NAME,
            "version": SERVER_VERSION,
            "extensions": ["binary_tensor_data"],
        },
    )


@_answers
def model_metadata(request: Request) -> Response:
    """GET /v2/models/{name}[/versions/{version}]: the signature of the version
    named, else of the alias's heaviest version, and every version of the model."""
    predictor = wiring.predictor()
    name = request.path_params["name"]
    version = _path_version(request)
    alias = None if version is not None else _alias(request, {})
    manifest = predictor.describe(name, version=version, alias=alias)
    if version is None:
        alias = alias or predictor.default_alias
    body = {
        "name": manifest.name,
        "versions": [str(v) for v in predictor.registry.list_versions(name)],
        "platform": PLATFORM,
        "inputs": [spec.to_dict() for spec in manifest.inputs],
        "outputs": [spec.to_dict() for spec in manifest.outputs],
    }
    return Response(200, body, _served_by(manifest, alias))


@_answers
def model_ready(request: Request) -> Response:
    """GET /v2/models/{name}[/versions/{version}]/ready: the version named, else
    every version the alias gives weight to, loads and passes its integrity check
    (a 503 names the one that does not). Loading warms the container."""
    predictor = wiring.predictor()
    name = request.path_params["name"]
    version = _path_version(request)
    if version is not None:
        manifest = predictor.manifest(name, version)
        predictor.models.get(manifest)
        return Response(200, {"name": name, "ready": True}, _served_by(manifest, None))
    document = predictor.alias(name, _alias(request, {}))
    for weighted, weight in sorted(document.weights.items()):
        if weight > 0:
            predictor.models.get(predictor.manifest(name, weighted))
    manifest = predictor.manifest(name, primary_version(document))
    return Response(
        200, {"name": name, "ready": True}, _served_by(manifest, document.alias)
    )


# -- predictions -----------------------------------------------------------------------


@_answers
def infer(request: Request) -> Response:
    """POST /v2/models/{name}[/versions/{version}]/infer (Open Inference Protocol)."""
    settings = wiring.settings()
    _check_body(request, settings)
    parsed = payloads.read_infer_request(
        request.body, request.header(payloads.BINARY_HEADER)
    )
    target = _resolve(request, parsed.parameters)
    inputs = payloads.decode_inputs(parsed, target.manifest, max_rows=settings.max_rows)
    prediction = wiring.predictor().run(
        target, inputs, outputs=parsed.outputs, request_id=request.request_id
    )
    body = payloads.encode_infer_response(
        prediction.outputs,
        model_name=target.name,
        model_version=target.version,
        request_id=parsed.id,
    )
    return Response(200, body, _served_by(target.manifest, target.alias))


@_answers
def predict(request: Request) -> Response:
    """POST /models/{name}/predict with ``{"instances": [...]}``."""
    settings = wiring.settings()
    _check_body(request, settings)
    document = payloads.parse_json(request.body)
    target = _resolve(request, {})
    inputs = payloads.decode_instances(
        document, target.manifest, max_rows=settings.max_rows
    )
    prediction = wiring.predictor().run(target, inputs, request_id=request.request_id)
    body = {
        "predictions": payloads.encode_predictions(target.manifest, prediction.outputs),
        "model": target.name,
        "version": target.version,
        "alias": target.alias,
    }
    return Response(200, body, _served_by(target.manifest, target.alias))


# -- helpers ---------------------------------------------------------------------------


def _check_body(request: Request, settings: Settings) -> None:
    """Refuse a body over the size limit (before reading it) or of a type we do not
    read."""
    if len(request.body) > settings.max_request_bytes:
        raise PayloadTooLargeError(len(request.body), settings.max_request_bytes)
    content_type = request.header("Content-Type") or ""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type and media_type not in ACCEPTED_CONTENT_TYPES:
        raise UnsupportedMediaTypeError(content_type, list(ACCEPTED_CONTENT_TYPES))


def _path_version(request: Request) -> int | None:
    raw = request.path_params.get("version")
    return None if raw is None else parse_version(raw)


def _text_parameter(parameters: Mapping[str, Any], key: str) -> str | None:
    value = parameters.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidInputError(f"parameters.{key}", "expected a string")
    return str(value)


def _alias(request: Request, parameters: Mapping[str, Any]) -> str | None:
    return (
        _text_parameter(parameters, "alias")
        or request.query_params.get("alias")
        or request.header("X-Turnout-Alias")
        or None
    )


def _resolve(request: Request, parameters: Mapping[str, Any]) -> Target:
    version = _path_version(request)
    routing_key = _text_parameter(parameters, "routing_key") or request.header(
        "X-Routing-Key"
    )
    return wiring.predictor().resolve(
        request.path_params["name"],
        version=version,
        alias=None if version is not None else _alias(request, parameters),
        routing_key=routing_key or None,
    )


def _served_by(manifest: Manifest, alias: str | None) -> dict[str, str]:
    return {
        "X-Model-Name": manifest.name,
        "X-Model-Version": str(manifest.version),
        "X-Model-Alias": alias or "",
    }
