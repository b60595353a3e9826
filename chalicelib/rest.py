"""The REST protocols over the prediction core, without a web framework.

Open Inference Protocol (KServe V2) routes and the simple ``instances`` route. Each
handler of RestApi takes a plain Request and returns a plain Response; ``app.py``
converts Chalice's. The HTTP side lives here (body size, content type, headers,
where the alias and routing key come from, status codes); the DataPlane resolves,
decodes, runs and encodes. ERROR_STATUS is the one table from domain errors to
status codes: anything else is logged with its traceback and answered with a bare
500.

Who answers: the version in the path, else the alias named by ``parameters.alias``
(V2 body), ``?alias=`` or the ``X-Turnout-Alias`` header (in that order), else the
stage's default alias; the routing key is ``parameters.routing_key``, else the
``X-Routing-Key`` header. Successful answers name the version in X-Model-Name,
X-Model-Version and X-Model-Alias (empty when the path named the version).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chalicelib.config import Settings
from chalicelib.dataplane import Answer, DataPlane
from chalicelib.errors import (
    AliasConflictError,
    FeedbackUnavailableError,
    InvalidAliasError,
    InvalidInputError,
    InvalidModelError,
    InvalidNameError,
    ModelDoesNotFitError,
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
from chalicelib.observe import (
    CLIENT_ERROR,
    OK,
    REST,
    SERVER_ERROR,
    Observation,
    Observers,
)
from chalicelib.protocols import instances, v2
from chalicelib.protocols.common import Codec, parse_json
from chalicelib.registry.manifest import Manifest

if TYPE_CHECKING:
    from chalicelib.feedback import Feedback

logger = logging.getLogger("turnout.rest")

SERVER_NAME = "turnout"
SERVER_VERSION = "0.1.0"

# What a request body may be. No Content-Type at all is read as JSON too;
# octet-stream is what binary-extension clients send (and what API Gateway passes
# through as bytes: it is in Chalice's default binary_types).
ACCEPTED_CONTENT_TYPES = ("application/json", "application/octet-stream")
# The caller's own id of an ``instances`` request (V2 requests carry ``id``):
# captured with the request, so that its labels may name it.
CALLER_ID_HEADER = "X-Inference-Id"

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
    (FeedbackUnavailableError, 503),
    # A version too large for this function's /tmp or memory: the others serve.
    (ModelDoesNotFitError, 503),
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
# A handler of RestApi: the request, and the Observation it fills.
_Work = Callable[[Request, Observation], Response]


def error_status(error: TurnoutError) -> int | None:
    """The status code ERROR_STATUS gives ``error``; None when it is not mapped."""
    return next(
        (status for kind, status in ERROR_STATUS if isinstance(error, kind)), None
    )


def outcome_of(status: int) -> str:
    """OK, CLIENT_ERROR or SERVER_ERROR for an HTTP status."""
    if status < 400:
        return OK
    return CLIENT_ERROR if status < 500 else SERVER_ERROR


class RestApi:
    """The REST handlers over one DataPlane; every prediction request (answered
    or refused) is handed to ``observers`` once, after its answer is built."""

    def __init__(
        self,
        plane: DataPlane,
        settings: Settings,
        observers: Observers,
        *,
        clock: Callable[[], float] = time.perf_counter,
        feedback: Callable[[], Feedback | None] = lambda: None,
    ) -> None:
        self.plane = plane
        self.settings = settings
        self.observers = observers
        self._clock = clock
        self._feedback = feedback

    # -- health and metadata -----------------------------------------------------------

    def live(self, request: Request) -> Response:
        """GET /v2/health/live: the function answers."""
        return Response(200, {"live": True}, _json_headers(request))

    def ready(self, request: Request) -> Response:
        """GET /v2/health/ready: configured to serve (no S3 call: probes stay
        cheap)."""
        if not self.settings.model_bucket:
            body = {"ready": False, "error": "TURNOUT_MODEL_BUCKET is unset"}
            return Response(503, body, _json_headers(request))
        return Response(200, {"ready": True}, _json_headers(request))

    def server_metadata(self, request: Request) -> Response:
        """GET /v2: who serves, and the protocol extensions it supports."""
        body = {
            "name": SERVER_NAME,
            "version": SERVER_VERSION,
            "extensions": ["binary_tensor_data"],
        }
        return Response(200, body, _json_headers(request))

    def model_metadata(self, request: Request) -> Response:
        """GET /v2/models/{name}[/versions/{version}]: the signature of the
        version named, else of the alias's heaviest version, and every version
        of the model."""
        return self._answer(request, self._model_metadata, observed=False)

    def model_ready(self, request: Request) -> Response:
        """GET /v2/models/{name}[/versions/{version}]/ready: the version named,
        else every version the alias gives weight to, loads and passes its
        integrity check (a 503 names the one that does not). Loading warms the
        container."""
        return self._answer(request, self._model_ready, observed=False)

    # -- predictions -------------------------------------------------------------------

    def infer(self, request: Request) -> Response:
        """POST /v2/models/{name}[/versions/{version}]/infer (Open Inference
        Protocol)."""
        return self._answer(request, self._v2, observed=True)

    def predict(self, request: Request) -> Response:
        """POST /models/{name}/predict with ``{"instances": [...]}``."""
        return self._answer(request, self._instances, observed=True)

    # -- ground truth ------------------------------------------------------------------

    def feedback(self, request: Request) -> Response:
        """POST /models/{name}/feedback with ``{"feedback": [{"id", "label"}]}``:
        every entry is kept (written after the answer), or none."""
        return self._answer(request, self._labels, observed=False)

    def _labels(self, request: Request, observation: Observation) -> Response:
        self._check_body(request)
        feedback = self._feedback()
        if feedback is None:
            raise FeedbackUnavailableError()
        accepted = feedback.accept(request.path_params["name"], request.body)
        return Response(200, {"accepted": accepted})

    def _model_metadata(self, request: Request, observation: Observation) -> Response:
        version = _path_version(request)
        body, manifest, alias = self.plane.metadata(
            request.path_params["name"],
            version=version,
            alias=None if version is not None else _alias(request, {}),
        )
        return Response(200, body, _served_by(manifest, alias))

    def _model_ready(self, request: Request, observation: Observation) -> Response:
        name = request.path_params["name"]
        version = _path_version(request)
        manifest, alias = self.plane.ready(
            name,
            version=version,
            alias=None if version is not None else _alias(request, {}),
        )
        return Response(200, {"name": name, "ready": True}, _served_by(manifest, alias))

    def _v2(self, request: Request, observation: Observation) -> Response:
        self._check_body(request)
        parsed = v2.read_infer_request(request.body, request.header(v2.BINARY_HEADER))
        observation.caller_id = parsed.id
        return self._infer_with(
            request, parsed, v2.CODEC, parsed.parameters, observation
        )

    def _instances(self, request: Request, observation: Observation) -> Response:
        self._check_body(request)
        document = parse_json(request.body)
        observation.caller_id = request.header(CALLER_ID_HEADER)
        return self._infer_with(request, document, instances.CODEC, {}, observation)

    def _infer_with[Parsed](
        self,
        request: Request,
        parsed: Parsed,
        codec: Codec[Parsed],
        parameters: Mapping[str, Any],
        observation: Observation,
    ) -> Response:
        """A parsed request through the DataPlane with its protocol's ``codec``;
        ``parameters`` are the request's own (V2), read before the query string
        and headers for the alias and routing key."""
        version = _path_version(request)
        answer = self.plane.infer(
            request.path_params["name"],
            parsed,
            codec=codec,
            version=version,
            alias=None if version is not None else _alias(request, parameters),
            routing_key=_routing_key(request, parameters),
            observation=observation,
        )
        return _answered(answer)

    # -- the frame every answer goes through -------------------------------------------

    def _answer(self, request: Request, work: _Work, *, observed: bool) -> Response:
        """Run ``work`` and turn its errors into answers: mapped domain errors into
        their status and message, anything else into a logged, generic 500. With
        ``observed``, the observers get the request's Observation afterwards."""
        started = self._clock()
        observation = Observation(
            REST, request.request_id, model=request.path_params.get("name", "")
        )
        try:
            response = work(request, observation)
        except TurnoutError as error:
            status = error_status(error)
            if status is None:
                response = _internal_error(request)
            else:
                if status >= 500:
                    logger.error("request %s: %s", request.request_id, error.message)
                response = Response(status, {"error": error.message})
            observation.error = response.body["error"]
        except Exception:
            response = _internal_error(request)
            observation.error = response.body["error"]
        headers = response.headers
        headers["Content-Type"] = "application/json"
        headers["X-Request-Id"] = request.request_id
        if observed:
            observation.status = response.status
            observation.outcome = outcome_of(response.status)
            observation.latency_ms = (self._clock() - started) * 1000.0
            self.observers.observe(observation)
        return response

    def _check_body(self, request: Request) -> None:
        """Refuse a body over the size limit (before reading it) or of a type we do
        not read."""
        limit = self.settings.max_request_bytes
        if len(request.body) > limit:
            raise PayloadTooLargeError(len(request.body), limit)
        content_type = request.header("Content-Type") or ""
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type and media_type not in ACCEPTED_CONTENT_TYPES:
            raise UnsupportedMediaTypeError(content_type, list(ACCEPTED_CONTENT_TYPES))


# -- helpers ---------------------------------------------------------------------------


def _internal_error(request: Request) -> Response:
    logger.exception(
        "request %s: unhandled error in %s %s",
        request.request_id,
        request.method,
        dict(request.path_params),
    )
    return Response(500, {"error": "internal error"})


def _json_headers(request: Request) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Request-Id": request.request_id}


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


def _routing_key(request: Request, parameters: Mapping[str, Any]) -> str | None:
    return (
        _text_parameter(parameters, "routing_key")
        or request.header("X-Routing-Key")
        or None
    )


def _answered(answer: Answer) -> Response:
    return Response(200, answer.body, _served_by(answer.manifest, answer.alias))


def _served_by(manifest: Manifest, alias: str | None) -> dict[str, str]:
    return {
        "X-Model-Name": manifest.name,
        "X-Model-Version": str(manifest.version),
        "X-Model-Alias": alias or "",
    }
