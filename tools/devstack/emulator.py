"""The Lambda emulation ``chalice local`` lacks: each of these runs one function
of app.py in a process of its own, called as Lambda would call it.

- ``EventPump``: S3 notifications from an SQS queue, one event per record, to
  the batch function (S3 invoking a function asynchronously);
- ``MessagePump``: SQS messages to an ``on_sqs_message`` function (Lambda's SQS
  event source: deleted on success, delivered again on failure);
- ``Timer``: a scheduled event every N seconds to an ``@app.schedule`` function
  (an EventBridge schedule; ``chalice local`` runs none).
"""

from __future__ import annotations

import ast
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import boto3

from tools.devstack.clients import aws_environment
from tools.devstack.notifications import describe_event, s3_events
from tools.devstack.processes import ChildProcess
from tools.devstack.stage import REGION, ROOT, STAGE

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

logger = logging.getLogger("devstack")

BATCH_FUNCTION = "handle_batch_upload"
SHARD_FUNCTION = "handle_batch_shard"
# Labels files uploaded under feedback/ (chalicelib.feedback).
FEEDBACK_FUNCTION = "handle_feedback_upload"
# Settings make dev's own environment overrides the stage's with, when set:
# ``TURNOUT_BATCH_SHARD_BYTES=8388608 make dev`` fans out a 50 MB file.
DEV_OVERRIDES = ("TURNOUT_BATCH_SHARD_BYTES",)
# A failed shard is delivered again after this long (on AWS: the queue's
# visibility timeout, which must cover the function's timeout).
RETRY_SECONDS = 2
# How often ``make dev`` runs each ``@app.schedule`` function, whatever its
# schedule on AWS (TURNOUT_DEV_SCHEDULE_SECONDS).
SCHEDULE_SECONDS = 60.0
# The account moto's ARNs name.
ACCOUNT = "123456789012"


def describe_outcome(result: object) -> tuple[int, str]:
    """A log level and a line for what the batch handler returned: failures stand
    out (ERROR, and said first), partial jobs and lost claims warn."""
    if isinstance(result, list) and len(result) == 1:
        result = result[0]  # an SQS handler's answer for its one message
    if not isinstance(result, Mapping):
        return logging.INFO, "ignored (not a batch input, or gone)"
    action = result.get("action")
    manifest = result.get("manifest") or {}
    if action == "fanned_out":
        shards = manifest.get("progress", {}).get("shards")
        return logging.INFO, f"fanned out into {shards} shards"
    if action == "shard_done":
        return logging.INFO, f"shard {result.get('index')} done"
    if action == "abandoned":
        return logging.INFO, "shard abandoned: its job is over or superseded"
    if action == "skipped":
        return logging.INFO, f"skipped: {result.get('reason')}"
    if action == "superseded":
        return logging.INFO, "superseded by a newer upload of the file"
    if action == "lost":
        return logging.WARNING, "stopped: another delivery took the job over"
    if action == "labels filed":
        filed = f"{result.get('labels')} labels filed"
        if result.get("rejected"):
            rejected = f"{result.get('rejected')} rejected (see {result.get('errors')})"
            return logging.WARNING, f"{filed}, {rejected}"
        return logging.INFO, filed
    status = manifest.get("status")
    rows = manifest.get("rows", {})
    if status == "failed":
        return logging.ERROR, f"BATCH JOB FAILED: {manifest.get('error')}"
    counts = f"{rows.get('predicted', 0)} rows predicted"
    output = (manifest.get("output") or {}).get("key")
    if status == "partial":
        errors = (manifest.get("errors") or {}).get("key")
        return logging.WARNING, (
            f"partial: {counts}, {rows.get('rejected', 0)} rejected (see {errors})"
        )
    return logging.INFO, f"{status}: {counts} -> {output}"


def deliver(
    invoke: Callable[[dict[str, Any]], object],
    event: dict[str, Any],
    where: str,
    describe: Callable[[object], tuple[int, str]] = describe_outcome,
) -> bool:
    """Call the function with ``event`` and log the outcome (``describe`` makes
    a level and a line of what it returned) or its failure, traceback and all;
    whether it returned."""
    started = time.perf_counter()
    try:
        result = invoke(event)
    except FunctionNotFoundError as error:
        logger.error("%s not delivered: %s", where, error)
        return False
    except Exception:
        logger.exception("%s: the handler failed", where)
        return False
    level, outcome = describe(result)
    seconds = time.perf_counter() - started
    logger.log(level, "%s: %s (%.2f s)", where, outcome, seconds)
    return True


class EventPump:
    """Moves S3 events from an SQS queue to a function, one record at a time.

    ``invoke`` is called with each event; what it raises is logged and the event
    dropped (Lambda would retry an asynchronous invocation twice, then drop it:
    a developer wants the traceback, not the same failure three times).
    """

    def __init__(
        self,
        sqs: SQSClient,
        queue_url: str,
        invoke: Callable[[dict[str, Any]], object],
        *,
        wait_seconds: int = 2,
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.invoke = invoke
        self.wait_seconds = wait_seconds

    def poll(self) -> int:
        """Wait up to ``wait_seconds`` for messages, deliver their events, delete
        the messages; returns the number of events delivered."""
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=self.wait_seconds,
        )
        delivered = 0
        for message in response.get("Messages", []):
            try:
                events = s3_events(message.get("Body", ""))
            except ValueError:
                logger.error("not an S3 notification, dropped: %r", message.get("Body"))
                events = []
            for event in events:
                self._deliver(event)
                delivered += 1
            self.sqs.delete_message(
                QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
            )
        return delivered

    def _deliver(self, event: dict[str, Any], where: str | None = None) -> bool:
        return deliver(self.invoke, event, where or describe_event(event))

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set; survives the queue being briefly away."""
        while not stop.is_set():
            try:
                self.poll()
            except Exception as error:  # botocore's connection errors, mostly
                if stop.is_set():
                    return
                logger.warning("cannot read %s: %s", self.queue_url, error)
                stop.wait(1.0)


class MessagePump(EventPump):
    """Moves SQS messages to an ``on_sqs_message`` function as Lambda's SQS event
    source does: one message per event, deleted when the handler returns, left
    in the queue when it raises (delivered again after RETRY_SECONDS here, its
    receive count up by one, until the queue's redrive policy moves it to the
    dead-letter queue)."""

    def poll(self) -> int:
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=1,
            WaitTimeSeconds=self.wait_seconds,
            MessageSystemAttributeNames=["All"],
        )
        delivered = 0
        for message in response.get("Messages", []):
            event = {"Records": [sqs_record(message, self.queue_url)]}
            where = f"message {message['MessageId']}"
            if self._deliver(event, where):
                self.sqs.delete_message(
                    QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
            else:
                self.sqs.change_message_visibility(
                    QueueUrl=self.queue_url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=RETRY_SECONDS,
                )
            delivered += 1
        return delivered


def sqs_record(message: Mapping[str, Any], queue_url: str) -> dict[str, Any]:
    """An SQS message as Lambda's event source hands it to a function."""
    name = queue_url.rstrip("/").rsplit("/", 1)[-1]
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {},
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}",
        "awsRegion": REGION,
    }


class FunctionNotFoundError(LookupError):
    """The app has no function of that name (or does not import)."""


class LambdaFunction:
    """One function of the Chalice app, called the way Lambda calls it: with the
    stage's environment for that function, a context carrying its memory size
    and timeout, and the event as a plain dict.

    The app is imported on first use, and again after a failed import (app.py
    may be half-written while a developer edits it). It sets the function's
    environment in this process, which is meant to run only this function.
    """

    def __init__(self, name: str, *, stage: str = STAGE, project_dir: Path = ROOT):
        self.name = name
        self.stage = stage
        self.project_dir = project_dir
        self._handler: Callable[[dict[str, Any], Any], object] | None = None
        self._memory_mb = 128
        self._timeout_ms = 3000

    def load(self) -> bool:
        """Import the app and find the function; False (and a log line) when the
        app does not import or does not define it."""
        from chalice.cli.factory import CLIFactory

        try:
            factory = CLIFactory(str(self.project_dir), environ=os.environ)
            config = factory.create_config_obj(chalice_stage_name=self.stage)
            scoped = config.scope(self.stage, self.name)
            overrides = {
                name: os.environ[name] for name in DEV_OVERRIDES if name in os.environ
            }
            os.environ.update(scoped.environment_variables)
            self._memory_mb = scoped.lambda_memory_size or self._memory_mb
            self._timeout_ms = (scoped.lambda_timeout or 3) * 1000
            app = config.chalice_app
            # Loading the app applies the stage's environment again: after it.
            os.environ.update(overrides)
        except Exception:
            logger.exception("the app does not load")
            return False
        self._handler = app.handler_map.get(self.name)
        if self._handler is None:
            logger.warning("app.py has no function %r (yet)", self.name)
        return self._handler is not None

    def __call__(self, event: dict[str, Any]) -> object:
        """Call the function with ``event``; FunctionNotFoundError without one."""
        from chalice.local import LambdaContext

        if self._handler is None and not self.load():
            raise FunctionNotFoundError(f"app.py has no function {self.name!r}")
        assert self._handler is not None
        context = LambdaContext(
            self.name, memory_size=self._memory_mb, max_runtime_ms=self._timeout_ms
        )
        return self._handler(event, context)


def scheduled_event(rule: str, now: datetime) -> dict[str, Any]:
    """The event an EventBridge schedule named ``rule`` hands its function at
    ``now`` (what Chalice's ``CloudWatchEvent`` reads)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{rule}"],
        "detail": {},
    }


def _describe_scheduled_run(result: object) -> tuple[int, str]:
    return logging.INFO, "done" if result is None else f"returned {result!r}"


class Timer:
    """Invokes a function with a scheduled event every ``every`` seconds, the
    first time ``every`` seconds after ``run`` starts (as a new EventBridge rate
    schedule does). A run that fails is logged; a run that overruns delays the
    next one rather than causing a burst.

    ``now`` (the events' time) and ``monotonic`` (the pace) are injectable, and
    ``run`` waits on its ``stop`` event, so a test drives it without sleeping.
    """

    def __init__(
        self,
        name: str,
        invoke: Callable[[dict[str, Any]], object],
        *,
        every: float,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if every <= 0:
            raise ValueError(f"a timer runs every so many seconds, not {every!r}")
        self.name = name
        self.invoke = invoke
        self.every = every
        self._now = now
        self._monotonic = monotonic

    def run(self, stop: threading.Event) -> None:
        """Invoke the function on time until ``stop`` is set."""
        due = self._monotonic() + self.every
        while not stop.wait(max(0.0, due - self._monotonic())):
            deliver(
                self.invoke,
                scheduled_event(self.name, self._now()),
                f"schedule {self.name}",
                _describe_scheduled_run,
            )
            due = max(due + self.every, self._monotonic())


def scheduled_functions(app_source: str) -> list[str]:
    """The names of the functions ``app_source`` (app.py's text) decorates with
    ``@app.schedule(...)``, in order."""
    names = []
    for node in ast.walk(ast.parse(app_source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                call = decorator.func if isinstance(decorator, ast.Call) else None
                if isinstance(call, ast.Attribute) and call.attr == "schedule":
                    names.append(node.name)
    return names


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT: an emulator process's orderly stop."""
    stop = threading.Event()

    def request_stop(signal_number: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


def run_event_pump(
    queue_url: str,
    *,
    stage: str = STAGE,
    function_name: str = BATCH_FUNCTION,
    messages: bool = False,
) -> None:
    """The pump process: deliver the queue's events (S3 notifications, or with
    ``messages`` SQS messages) to ``function_name`` until SIGTERM or SIGINT. The
    moto endpoint comes from ``AWS_ENDPOINT_URL``."""
    stop = _stop_on_signals()
    function = LambdaFunction(function_name, stage=stage)
    function.load()
    kind = MessagePump if messages else EventPump
    pump = kind(boto3.client("sqs"), queue_url, function)
    logger.info("delivering %s to %s", queue_url, function_name)
    pump.run(stop)


def run_timer(function_name: str, *, every: float, stage: str = STAGE) -> None:
    """The timer process: run ``function_name`` every ``every`` seconds until
    SIGTERM or SIGINT."""
    stop = _stop_on_signals()
    function = LambdaFunction(function_name, stage=stage)
    function.load()
    logger.info("running %s every %g s", function_name, every)
    Timer(function_name, function, every=every).run(stop)


def start_event_pump(
    endpoint_url: str,
    queue_url: str,
    *,
    stage: str = STAGE,
    function_name: str = BATCH_FUNCTION,
    messages: bool = False,
    log: Path | None = None,
) -> ChildProcess:
    """Launch the event pump (``python -m tools.devstack pump``) for one queue: of
    S3 notifications, or with ``messages`` of the function's own SQS messages."""
    return ChildProcess(
        f"event pump ({function_name})",
        [
            sys.executable,
            "-m",
            "tools.devstack",
            "pump",
            queue_url,
            "--stage",
            stage,
            "--function",
            function_name,
            *(["--messages"] if messages else []),
        ],
        environment=aws_environment(endpoint_url),
        log=log,
    )


def start_timer(
    endpoint_url: str,
    function_name: str,
    *,
    every: float,
    stage: str = STAGE,
    log: Path | None = None,
) -> ChildProcess:
    """Launch a timer (``python -m tools.devstack timer``) that runs the
    scheduled function ``function_name`` every ``every`` seconds."""
    return ChildProcess(
        f"timer ({function_name})",
        [
            sys.executable,
            "-m",
            "tools.devstack",
            "timer",
            function_name,
            "--every",
            f"{every:g}",
            "--stage",
            stage,
        ],
        environment=aws_environment(endpoint_url),
        log=log,
    )
