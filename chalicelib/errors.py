"""Domain errors. Each builds its message from its fields; none knows about HTTP.

``chalicelib.rest`` maps them to status codes in one table; the batch side writes
them into manifests and error reports; the CLI prints them on one line.
"""

from __future__ import annotations


class TurnoutError(Exception):
    """Base of every error Turnout raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidNameError(TurnoutError):
    def __init__(self, kind: str, value: str, reason: str) -> None:
        super().__init__(f"invalid {kind} name {value!r}: {reason}")
        self.kind = kind
        self.value = value


class InvalidModelError(TurnoutError):
    """The file is not a model onnxruntime can load (or serve)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"not a loadable ONNX model: {reason}")


class InvalidLabelsError(InvalidModelError):
    """Class labels that do not fit the model (it loads, but cannot be named so)."""

    def __init__(self, reason: str) -> None:
        TurnoutError.__init__(self, f"invalid labels: {reason}")


class ModelTooLargeError(TurnoutError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"model file is {size} bytes, over the limit of {limit} bytes "
            "(TURNOUT_MAX_MODEL_BYTES)"
        )
        self.size = size
        self.limit = limit


class NotFoundError(TurnoutError):
    """Base of the errors for something that does not exist."""


class ModelNotFoundError(NotFoundError):
    def __init__(self, name: str) -> None:
        super().__init__(f"model {name!r} not found")
        self.name = name


class VersionNotFoundError(NotFoundError):
    def __init__(self, name: str, version: int | str) -> None:
        super().__init__(f"model {name!r} has no version {version}")
        self.name = name
        self.version = version


class AliasNotFoundError(NotFoundError):
    def __init__(self, name: str, alias: str) -> None:
        super().__init__(f"model {name!r} has no alias {alias!r}")
        self.name = name
        self.alias = alias


class RevisionNotFoundError(NotFoundError):
    def __init__(self, name: str, alias: str, revision: int | str) -> None:
        super().__init__(f"alias {name}@{alias} has no revision {revision}")


class InvalidAliasError(TurnoutError):
    """An alias update that breaks a rule (weights, shadow, versions named)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid alias: {reason}")


class AliasConflictError(TurnoutError):
    """Someone else changed the alias between our read and our write."""

    def __init__(self, name: str, alias: str, revision: int | None) -> None:
        now = "does not exist" if revision is None else f"is now at revision {revision}"
        super().__init__(
            f"alias {name}@{alias} changed concurrently and {now}: "
            "read it again and retry"
        )
        self.name = name
        self.alias = alias
        self.revision = revision


class VersionInUseError(TurnoutError):
    def __init__(self, name: str, version: int, aliases: list[str]) -> None:
        super().__init__(
            f"version {version} of {name!r} is routed to by alias "
            f"{', '.join(sorted(aliases))}: move the traffic away first"
        )
        self.aliases = aliases


class ModelIntegrityError(TurnoutError):
    """An artifact that does not match its manifest: never served."""

    def __init__(self, name: str, version: int, reason: str) -> None:
        super().__init__(
            f"version {version} of {name!r} failed its integrity check: {reason}"
        )
        self.name = name
        self.version = version
        self.reason = reason


class ModelDoesNotFitError(TurnoutError):
    """A version this function cannot hold: its files exceed ``/tmp`` or loading
    them would exceed the function's memory. Raise the stage's figure to serve it."""

    def __init__(self, name: str, version: int, reason: str) -> None:
        super().__init__(f"version {version} of {name!r} cannot be served: {reason}")
        self.name = name
        self.version = version
        self.reason = reason


class InvalidInputError(TurnoutError):
    """Bad input to a prediction; ``field`` names where the problem is."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem


class PayloadTooLargeError(TurnoutError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"request body is {size} bytes, over the limit of {limit} bytes"
        )


class TooManyRowsError(TurnoutError):
    """More rows in one on-demand request than TURNOUT_MAX_ROWS allows."""

    def __init__(self, field: str, rows: int, limit: int) -> None:
        super().__init__(
            f"{field}: {rows} rows, over the limit of {limit} per request "
            "(TURNOUT_MAX_ROWS): split the request, or run a batch job"
        )
        self.rows = rows
        self.limit = limit


class UnsupportedMediaTypeError(TurnoutError):
    def __init__(self, content_type: str, supported: list[str]) -> None:
        super().__init__(
            f"content type {content_type!r} is not supported; "
            f"send one of {', '.join(supported)}"
        )


class ModelExecutionError(TurnoutError):
    """onnxruntime failed while running a version on inputs that passed the checks."""

    def __init__(self, name: str, version: int, reason: str) -> None:
        super().__init__(f"version {version} of {name!r} failed to run: {reason}")


class BatchFileError(TurnoutError):
    """A batch file that cannot be processed at all: its job fails with this reason
    (unknown format, not UTF-8, no column matches the model's inputs...)."""


class BatchKeyError(BatchFileError):
    def __init__(self, key: str, reason: str) -> None:
        super().__init__(
            f"key {key!r} {reason}: upload to incoming/{{model}}/{{file}}, "
            "incoming/{model}@{alias}/{file} or incoming/{model}@{version}/{file}"
        )
        self.key = key


class SourceChangedError(TurnoutError):
    """A batch input replaced between the job's first look and its read."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"{key} was replaced while it was read; the new upload is processed "
            "on its own event"
        )
        self.key = key


class BatchTimeLimitError(BatchFileError):
    """The function's time limit came before the end of the file."""

    def __init__(self, seconds: float, done: int, size: int, rows: int) -> None:
        share = f" ({100 * done / size:.0f}%)" if size else ""
        super().__init__(
            f"the file did not fit in the function's time limit: stopped after "
            f"{seconds:.0f} s with {done} of {size} bytes read{share} and {rows} "
            "rows predicted; split it into smaller files"
        )
        self.seconds = seconds
        self.done = done
        self.size = size
        self.rows = rows


class DocumentConflictError(TurnoutError):
    """A conditional write lost: the document was changed, created or deleted
    since it was read. Its owner says what that means (AliasConflictError...)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"{key} changed since it was read: read it again and retry")


class BatchStartedTooLateError(TurnoutError):
    """The time limit came before the job read any of its file (a slow model load,
    or a function with almost no time left): nothing was tried, so a later
    delivery may well succeed."""

    def __init__(self, seconds: float, seconds_at_start: float) -> None:
        super().__init__(
            f"the function's time limit came before the file was read: {seconds:.1f}"
            f" s after the job started with {seconds_at_start:.1f} s left; retry it, "
            "or give the function a longer timeout"
        )
        self.seconds = seconds
        self.seconds_at_start = seconds_at_start


class BatchJobNotFoundError(NotFoundError):
    def __init__(self, key: str) -> None:
        super().__init__(
            f"no batch job for {key!r}: its manifest does not exist (is the key the "
            "uploaded file's, under incoming/?)"
        )
        self.key = key


class BatchRetryRefusedError(TurnoutError):
    """A retry that would not help: the job is live, done, or failed for good."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"not retrying {key}: {reason}")
        self.key = key


class FeedbackUnavailableError(TurnoutError):
    """Labels cannot be kept: the stage has no capture bucket."""

    def __init__(self) -> None:
        super().__init__("feedback is off: the stage sets no TURNOUT_CAPTURE_BUCKET")


class BaselineExistsError(TurnoutError):
    """A version's training baseline is set once: it is as immutable as the version."""

    def __init__(self, name: str, version: int) -> None:
        super().__init__(
            f"version {version} of {name!r} already has a baseline; a baseline is "
            "set once and never replaced"
        )
        self.name = name
        self.version = version


class InvalidRolloutError(TurnoutError):
    """A rollout that cannot start or a change its state does not allow; the
    message says which rule and what would be accepted."""


class RolloutNotFoundError(NotFoundError):
    def __init__(self, name: str, alias: str) -> None:
        super().__init__(f"{name}@{alias} has no rollout (start one: rollout start)")
        self.name = name
        self.alias = alias
