"""``make dev``: Turnout on this machine, loopback only, with fake AWS credentials.

Starts, and stops again on Ctrl-C or SIGTERM:

1. a moto server (S3 and SQS) on 127.0.0.1:5000 (``TURNOUT_DEV_MOTO_PORT``);
2. the stage's buckets, the demo models registered through ``chalicelib.registry``
   and demo aliases (``DEMO_MODELS``, ``DEMO_ALIASES``);
3. S3 event delivery, which ``chalice local`` lacks (Chalice issue 899): the batch
   bucket notifies an SQS queue on the moto server of every object created under
   ``incoming/``, and an event pump process long-polls the queue and calls the
   app's ``handle_batch_upload`` with each S3 event, as Lambda would; the shard
   queue of fanned-out files (and its dead-letter queue), whose messages
   ``TURNOUT_DEV_SHARD_WORKERS`` pump processes (default 2) deliver to
   ``handle_batch_shard`` concurrently, as Lambda's SQS event source would
   (``TURNOUT_BATCH_SHARD_BYTES``, when set, overrides the stage's shard size);
4. ``chalice local --stage dev`` on 127.0.0.1:8000 (``TURNOUT_DEV_PORT``), whose
   boto3 clients reach moto through ``AWS_ENDPOINT_URL``.

The end-to-end tests start the same stack with ``DevStack`` on free ports.
Every child runs in its own session, so that Ctrl-C reaches this process alone
and stopping a child stops whatever it started (chalice's reloader worker), and,
on Linux, with a parent-death signal, so that none outlives a killed devstack.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, TYPE_CHECKING, Any, TextIO
from urllib.parse import quote_plus, unquote_plus

import boto3

from chalicelib.aliases.store import AliasStore
from chalicelib.config import INCOMING_PREFIX, Settings
from chalicelib.registry.versions import Registry
from tools.emf_forward import LogForwarder

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
REGION = "us-east-1"
STAGE = "dev"
BATCH_FUNCTION = "handle_batch_upload"
SHARD_FUNCTION = "handle_batch_shard"
# Settings make dev's own environment overrides the stage's with, when set:
# ``TURNOUT_BATCH_SHARD_BYTES=8388608 make dev`` fans out a 50 MB file.
DEV_OVERRIDES = ("TURNOUT_BATCH_SHARD_BYTES",)
# A failed shard is delivered again after this long (on AWS: the queue's
# visibility timeout, which must cover the function's timeout).
RETRY_SECONDS = 2
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
# Anything that could send a child to a real account or endpoint, or make
# botocore ignore AWS_ENDPOINT_URL.
_FOREIGN_AWS_VARIABLES = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
)

logger = logging.getLogger("devstack")


@dataclass(frozen=True)
class DemoModel:
    name: str
    filename: str
    description: str


DEMO_MODELS = (
    DemoModel("iris", "iris-v1.onnx", "logistic regression"),
    DemoModel("iris", "iris-v2.onnx", "gradient boosting"),
    DemoModel("diabetes", "diabetes.onnx", "gradient boosting regressor"),
)
DEMO_ALIASES: tuple[tuple[str, str, dict[int, float]], ...] = (
    ("iris", "prod", {1: 90, 2: 10}),
    ("iris", "staging", {2: 100}),
    ("diabetes", "prod", {1: 100}),
)


# -- configuration and AWS clients ---------------------------------------------


def stage_environment(stage: str = STAGE, project_dir: Path = ROOT) -> dict[str, str]:
    """The environment variables ``.chalice/config.json`` gives ``stage``'s API
    handler: the top level's, then the stage's own."""
    config = json.loads((project_dir / ".chalice" / "config.json").read_text())
    environment = dict(config.get("environment_variables", {}))
    environment.update(config["stages"][stage].get("environment_variables", {}))
    return environment


def stage_settings(stage: str = STAGE, project_dir: Path = ROOT) -> Settings:
    """The settings ``stage`` runs with (its buckets, default alias...)."""
    return Settings.from_env(stage_environment(stage, project_dir))


def aws_environment(endpoint_url: str | None) -> dict[str, str]:
    """This process's environment made safe for a child: fake credentials, a fixed
    region, and every AWS client pointed at ``endpoint_url`` (None: at no endpoint
    in particular, for moto's in-process mock)."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in _FOREIGN_AWS_VARIABLES and not key.startswith("AWS_ENDPOINT_URL")
    }
    environment.update(FAKE_CREDENTIALS)
    environment.update(
        {
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            # The developer's ~/.aws files could name profiles or endpoints.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "PYTHONUNBUFFERED": "1",
        }
    )
    if endpoint_url is not None:
        environment["AWS_ENDPOINT_URL"] = endpoint_url
    return environment


def _session() -> boto3.session.Session:
    return boto3.session.Session(
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=REGION,
    )


def s3_client(endpoint_url: str) -> S3Client:
    """An S3 client on the moto server, with fake credentials."""
    return _session().client("s3", endpoint_url=endpoint_url)


def sqs_client(endpoint_url: str) -> SQSClient:
    """An SQS client on the moto server, with fake credentials."""
    return _session().client("sqs", endpoint_url=endpoint_url)


def cloudwatch_client(endpoint_url: str) -> Any:
    """A CloudWatch client on the moto server, with fake credentials."""
    return _session().client("cloudwatch", endpoint_url=endpoint_url)


# -- child processes -----------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when its parent dies."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here, not in the child

    def set_death_signal() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return set_death_signal


class ChildExitedError(RuntimeError):
    """A child process ended while it was expected to run."""


class ChildProcess:
    """A child in a session of its own: ``stop()`` ends it and all it started.

    Its output goes to ``log`` (appended), or to this process's terminal when
    ``log`` is None, or nowhere when ``log`` is ``os.devnull``.
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        environment: Mapping[str, str],
        log: Path | None,
        cwd: Path = ROOT,
    ) -> None:
        self.name = name
        self.log = log
        self._output: IO[bytes] | None = log.open("ab") if log is not None else None
        self.process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(environment),
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT if self._output is not None else None,
            start_new_session=True,
            preexec_fn=_die_with_parent(),
        )

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, characters: int = 4000) -> str:
        """The end of the child's log, for error messages ("" without a log)."""
        if self.log is None or str(self.log) == os.devnull or not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")[-characters:]

    def check_running(self) -> None:
        if not self.running:
            tail = self.log_tail()
            raise ChildExitedError(
                f"{self.name} exited with status {self.process.returncode}"
                + (f"; the end of {self.log}:\n{tail}" if tail else "")
            )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the child's process group, SIGKILL it after ``timeout``."""
        try:
            if self.running:
                self._signal_group(signal.SIGTERM)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._signal_group(signal.SIGKILL)
                    self.process.wait()
            # A leader gone first may leave its own children in the group.
            self._signal_group(signal.SIGKILL)
        finally:
            if self._output is not None:
                self._output.close()

    def _signal_group(self, signal_number: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal_number)


def free_port() -> int:
    """A loopback port nobody listens on right now (the OS's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As servers do, so that a port left in TIME_WAIT counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def answers_http(url: str) -> bool:
    """True when something at ``url`` answers HTTP, whatever its status."""
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, urllib.error.URLError):
        return False


class Server:
    """A child process that serves HTTP on a loopback port.

    ``port=0`` picks a free port, and picks again if the child dies at startup
    (another process may take a free port between the pick and the bind).
    """

    _ATTEMPTS = 3

    def __init__(
        self,
        name: str,
        command_for: Callable[[int], Sequence[str]],
        *,
        port: int,
        probe_path: str,
        environment: Mapping[str, str],
        log: Path | None,
        port_variable: str = "",
    ) -> None:
        self.name = name
        self._command_for = command_for
        self._requested_port = port
        self._probe_path = probe_path
        self._environment = environment
        self._log = log
        self._port_variable = port_variable
        self._attempts_left = self._ATTEMPTS if port == 0 else 1
        self.port = 0
        self.child: ChildProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        """Launch the child without waiting for it (see ``wait_until_ready``)."""
        self._attempts_left -= 1
        self.port = self._requested_port or free_port()
        if self._requested_port and not port_is_free(self.port):
            hint = (
                f": set {self._port_variable} to use another"
                if self._port_variable
                else ""
            )
            raise ChildExitedError(
                f"{self.name} cannot listen on {LOOPBACK}:{self.port}, "
                f"the port is taken{hint}"
            )
        self.child = ChildProcess(
            self.name,
            self._command_for(self.port),
            environment=self._environment,
            log=self._log,
        )

    def wait_until_ready(self, timeout: float) -> None:
        """Poll until the server answers HTTP; ChildExitedError or TimeoutError."""
        assert self.child is not None, "start() the server first"
        deadline = time.monotonic() + timeout
        while not answers_http(self.url + self._probe_path):
            if not self.child.running:
                if self._attempts_left <= 0:
                    self.child.check_running()
                logger.info(
                    "%s did not start on port %d, retrying", self.name, self.port
                )
                self.child.stop()
                self.start()
            elif time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name} did not answer on {self.url} within {timeout:.0f} s; "
                    f"the end of its log:\n{self.child.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()


def start_moto(
    port: int = 0, *, log: Path | None = None, timeout: float = 60.0
) -> Server:
    """A moto server (all services, one in-memory account) on ``LOOPBACK:port``."""
    server = Server(
        "moto server",
        lambda chosen: [
            sys.executable,
            "-m",
            "moto.server",
            "-H",
            LOOPBACK,
            "-p",
            str(chosen),
        ],
        port=port,
        probe_path="/moto-api/",
        environment=aws_environment(None),
        log=log,
        port_variable="TURNOUT_DEV_MOTO_PORT",
    )
    server.start()
    try:
        server.wait_until_ready(timeout)
    except BaseException:
        server.stop()
        raise
    return server


def start_chalice_local(
    endpoint_url: str,
    port: int = 0,
    *,
    stage: str = STAGE,
    autoreload: bool = True,
    log: Path | None = None,
    project_dir: Path = ROOT,
) -> Server:
    """Launch ``chalice local`` for ``stage`` with its AWS clients on
    ``endpoint_url``; call ``wait_until_ready`` on the result before using it."""

    def command(chosen: int) -> list[str]:
        return [
            # The script, not ``python -c``: the reloader re-runs its sys.argv.
            str(Path(sys.executable).parent / "chalice"),
            "--project-dir",
            str(project_dir),
            "local",
            "--stage",
            stage,
            "--host",
            LOOPBACK,
            "--port",
            str(chosen),
            "--autoreload" if autoreload else "--no-autoreload",
        ]

    server = Server(
        "chalice local",
        command,
        port=port,
        probe_path="/v2/health/live",
        environment=aws_environment(endpoint_url),
        log=log,
        port_variable="TURNOUT_DEV_PORT",
    )
    server.start()
    return server


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


# -- the demo registry and the batch bucket's events --------------------------


def create_buckets(s3: S3Client, *buckets: str) -> None:
    """Create the buckets (a bucket that already exists is kept as it is)."""
    for bucket in buckets:
        with contextlib.suppress(
            s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists
        ):
            s3.create_bucket(Bucket=bucket)


def seed_registry(
    registry: Registry,
    models_dir: Path = ROOT / "models",
    *,
    actor: str = "make dev",
) -> AliasStore:
    """Register ``DEMO_MODELS`` (in order: iris 1 and 2, diabetes 1) and set
    ``DEMO_ALIASES``; returns the alias store over ``registry``."""
    for model in DEMO_MODELS:
        registry.register(
            model.name,
            (models_dir / model.filename).read_bytes(),
            description=model.description,
        )
    aliases = AliasStore(registry)
    for name, alias, weights in DEMO_ALIASES:
        aliases.set_routing(name, alias, weights, actor=actor, reason="demo alias")
    return aliases


def connect_bucket_events(
    s3: S3Client,
    sqs: SQSClient,
    bucket: str,
    queue_name: str,
    *,
    prefix: str = INCOMING_PREFIX,
    visibility_seconds: int = 900,
) -> str:
    """Send ``s3:ObjectCreated:*`` events for keys under ``prefix`` in ``bucket``
    to the SQS queue ``queue_name`` (created here); returns the queue's URL.

    ``visibility_seconds`` should cover the handler's run, so that a long job is
    not handed out twice.
    """
    queue_url = sqs.create_queue(
        QueueName=queue_name,
        Attributes={"VisibilityTimeout": str(visibility_seconds)},
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": queue_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {
                        "Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}
                    },
                }
            ]
        },
    )
    return queue_url


def create_shard_queue(
    sqs: SQSClient, name: str, *, attempts: int, visibility_seconds: int = 900
) -> str:
    """The queue of fanned-out files' shards (created here, with its dead-letter
    queue ``{name}-dead`` after ``attempts`` receives); returns its URL."""
    dead = sqs.create_queue(QueueName=f"{name}-dead")["QueueUrl"]
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    redrive = {"deadLetterTargetArn": dead_arn, "maxReceiveCount": str(attempts)}
    return sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(visibility_seconds),
            "RedrivePolicy": json.dumps(redrive),
        },
    )["QueueUrl"]


# -- the event pump ------------------------------------------------------------


def encode_event_key(key: str) -> str:
    """An S3 key as S3 writes it into events: form-encoded (a space is ``+``),
    slashes kept. moto encodes the slashes too; this undoes the difference."""
    return quote_plus(unquote_plus(key), safe="/")


def s3_events(message_body: str) -> list[dict[str, Any]]:
    """The Lambda events in one S3 notification: one per record, as S3 invokes a
    function directly. None for S3's ``s3:TestEvent``; ValueError if the body is
    not a JSON object."""
    notification = json.loads(message_body)
    if not isinstance(notification, dict):
        raise ValueError("an S3 notification is a JSON object")
    events = []
    for record in notification.get("Records", []):
        s3 = record.get("s3", {})
        s3_object = dict(s3.get("object", {}))
        if "key" in s3_object:
            s3_object["key"] = encode_event_key(s3_object["key"])
        events.append({"Records": [{**record, "s3": {**s3, "object": s3_object}}]})
    return events


def describe_event(event: Mapping[str, Any]) -> str:
    """``s3://bucket/key`` of a one-record S3 event, for logs."""
    s3 = event["Records"][0]["s3"]
    return f"s3://{s3['bucket']['name']}/{unquote_plus(s3['object']['key'])}"


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
        """Call the function with ``event``; whether it returned."""
        where = where or describe_event(event)
        started = time.perf_counter()
        try:
            result = self.invoke(event)
        except FunctionNotFoundError as error:
            logger.error("%s not delivered: %s", where, error)
            return False
        except Exception:
            logger.exception("%s: the handler failed", where)
            return False
        level, outcome = describe_outcome(result)
        seconds = time.perf_counter() - started
        logger.log(level, "%s: %s (%.2f s)", where, outcome, seconds)
        return True

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
        "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:{name}",
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
    stop = threading.Event()

    def request_stop(signal_number: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    function = LambdaFunction(function_name, stage=stage)
    function.load()
    kind = MessagePump if messages else EventPump
    pump = kind(boto3.client("sqs"), queue_url, function)
    logger.info("delivering %s to %s", queue_url, function_name)
    pump.run(stop)


# -- the whole stack -------------------------------------------------------------


class DevStack:
    """moto server, demo registry, S3 event pump and ``chalice local``, started on
    ``__enter__`` (ready to answer) and stopped on ``__exit__``.

    Ports 0 mean free ports. ``log_dir`` receives one log per child; without it
    chalice local and the pump write to this terminal and moto nowhere. Once
    started: ``api_url``, ``endpoint_url`` (moto), ``model_bucket``,
    ``batch_bucket``, ``queue_url`` (the batch bucket's events), ``s3`` and
    ``sqs`` (clients on moto), ``registry`` and ``aliases`` (on the model bucket).
    """

    def __init__(
        self,
        *,
        moto_port: int = 0,
        api_port: int = 0,
        stage: str = STAGE,
        autoreload: bool = False,
        log_dir: Path | None = None,
        startup_timeout: float = 120.0,
        shard_workers: int | None = None,
    ) -> None:
        self.stage = stage
        settings = stage_settings(stage)
        self.shard_queue_name = settings.batch_shard_queue
        self.shard_bytes = int(
            os.environ.get("TURNOUT_BATCH_SHARD_BYTES") or settings.batch_shard_bytes
        )
        self.shard_attempts = settings.batch_shard_attempts
        self.shard_workers = (
            _count_from_environment("TURNOUT_DEV_SHARD_WORKERS", 2)
            if shard_workers is None
            else shard_workers
        )
        self.shard_pumps: list[ChildProcess] = []
        self.shard_queue_url = ""
        self.model_bucket = settings.model_bucket
        self.batch_bucket = settings.batch_bucket
        self.capture_bucket = settings.capture_bucket
        self.alias_cache_seconds = settings.alias_cache_seconds
        self.queue_name = f"turnout-batch-events-{stage}"
        self._moto_port = moto_port
        self._api_port = api_port
        self._autoreload = autoreload
        self._log_dir = log_dir
        self._startup_timeout = startup_timeout
        self._stack = contextlib.ExitStack()
        self.moto: Server | None = None
        self.api: Server | None = None
        self.pump: ChildProcess | None = None
        self.queue_url = ""
        self.metrics: LogForwarder | None = None
        self._echoed_logs: Path | None = None

    def _log(self, name: str, *, quiet: bool = False) -> Path | None:
        if self._log_dir is None and not quiet:
            # Logged to a file all the same, which the metrics forwarder reads and
            # copies to this terminal.
            if self._echoed_logs is None:
                self._echoed_logs = Path(
                    self._stack.enter_context(
                        tempfile.TemporaryDirectory(prefix="turnout-dev-logs-")
                    )
                )
            return self._echoed_logs / f"{name}.log"
        if self._log_dir is None:
            return Path(os.devnull)
        self._log_dir.mkdir(parents=True, exist_ok=True)
        return self._log_dir / f"{name}.log"

    @property
    def endpoint_url(self) -> str:
        """The moto server's URL: every AWS client of the stack talks to it."""
        assert self.moto is not None, "the stack is not started"
        return self.moto.url

    @property
    def api_url(self) -> str:
        """chalice local's base URL (no trailing slash)."""
        assert self.api is not None, "the stack is not started"
        return self.api.url

    def __enter__(self) -> DevStack:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def _start(self) -> None:
        self.moto = start_moto(
            self._moto_port,
            log=self._log("moto", quiet=True),
            timeout=self._startup_timeout,
        )
        self._stack.callback(self.moto.stop)
        self.s3 = s3_client(self.endpoint_url)
        self.sqs = sqs_client(self.endpoint_url)
        create_buckets(
            self.s3, self.model_bucket, self.batch_bucket, self.capture_bucket
        )
        self.queue_url = connect_bucket_events(
            self.s3, self.sqs, self.batch_bucket, self.queue_name
        )
        self.shard_queue_url = create_shard_queue(
            self.sqs, self.shard_queue_name, attempts=self.shard_attempts
        )
        # chalice local and the pumps import the app while the registry is seeded.
        self.pump = start_event_pump(
            self.endpoint_url, self.queue_url, stage=self.stage, log=self._log("pump")
        )
        self._stack.callback(self.pump.stop)
        for worker in range(self.shard_workers):
            shard_pump = start_event_pump(
                self.endpoint_url,
                self.shard_queue_url,
                stage=self.stage,
                function_name=SHARD_FUNCTION,
                messages=True,
                log=self._log(f"shard-pump-{worker + 1}"),
            )
            self._stack.callback(shard_pump.stop)
            self.shard_pumps.append(shard_pump)
        self.api = start_chalice_local(
            self.endpoint_url,
            self._api_port,
            stage=self.stage,
            autoreload=self._autoreload,
            log=self._log("chalice-local"),
        )
        self._stack.callback(self.api.stop)
        self.metrics = start_metrics_forwarder(
            self.endpoint_url,
            [
                child.log
                for child in (self.pump, self.api.child)
                if child is not None and child.log is not None
            ],
            echo=sys.stdout if self._log_dir is None else None,
        )
        self._stack.callback(self.metrics.stop)
        self.registry = Registry(self.s3, self.model_bucket)
        self.aliases = seed_registry(self.registry)
        self.api.wait_until_ready(self._startup_timeout)
        self.pump.check_running()
        for shard_pump in self.shard_pumps:
            shard_pump.check_running()

    def check_running(self) -> None:
        """ChildExitedError if a part of the stack has stopped."""
        for server in (self.moto, self.api):
            if server is not None and server.child is not None:
                server.child.check_running()
        for pump in [self.pump, *self.shard_pumps]:
            if pump is not None:
                pump.check_running()

    def logs(self) -> str:
        """The end of each child's log (with ``log_dir``), for failure messages;
        moto's request log, the least telling, gets the least room."""
        tails = []
        for child, characters in (
            (self.pump, 4000),
            *((pump, 2000) for pump in self.shard_pumps),
            (self.api.child if self.api else None, 4000),
            (self.moto.child if self.moto else None, 1000),
        ):
            tail = child.log_tail(characters) if child is not None else ""
            if child is not None and tail:
                tails.append(f"--- {child.name} ---\n{tail}")
        return "\n".join(tails)

    def __exit__(
        self,
        exception_type: type[BaseException] | None,
        exception: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stack.close()


def start_metrics_forwarder(
    endpoint_url: str, logs: Sequence[Path], *, echo: TextIO | None
) -> LogForwarder:
    """Forward the EMF metrics in ``logs`` to the moto server's CloudWatch (and
    copy the logs to ``echo``): what CloudWatch Logs does on AWS."""
    return LogForwarder(cloudwatch_client(endpoint_url), logs, echo=echo).start()


# -- make dev ----------------------------------------------------------------------

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
IRIS_CSV = (
    "sepal_length,sepal_width,petal_length,petal_width\\n"
    "5.1,3.5,1.4,0.2\\n6.7,3.0,5.2,2.3\\n"
)


def banner(stack: DevStack) -> str:
    """What ``make dev`` prints once the stack answers: where things are, and
    commands to paste."""
    api, moto, batch = stack.api_url, stack.endpoint_url, stack.batch_bucket
    tensor = {"name": "float_input", "shape": [1, 4], "datatype": "FP32"}
    v2_request = json.dumps({"inputs": [{**tensor, "data": IRIS_ROW}]})
    aliases = ", ".join(
        f"{name}@{alias} = "
        + " ".join(f"{version}:{weight:g}" for version, weight in weights.items())
        for name, alias, weights in DEMO_ALIASES
    )
    upload = f"{INCOMING_PREFIX}iris/iris.csv"
    lines = [
        f"Turnout dev stack (stage {stack.stage}, loopback only, fake AWS credentials)",
        f"  REST API       {api}   (chalice local)",
        f"  moto S3 + SQS  {moto}   (the app's AWS_ENDPOINT_URL)",
        f"  model bucket   {stack.model_bucket}: iris v1 + v2, diabetes v1",
        f"  aliases        {aliases}",
        f"  batch bucket   {batch}: uploads under {INCOMING_PREFIX} go to "
        f"{BATCH_FUNCTION}",
        f"  fan-out        files over {stack.shard_bytes} bytes: shards on "
        f"{stack.shard_queue_name} -> {len(stack.shard_pumps)} {SHARD_FUNCTION} "
        "workers",
        "",
        "Predict (Open Inference Protocol V2, then the simple format):",
        f"  curl -s {api}/v2/models/iris/infer -H 'Content-Type: application/json' \\",
        f"    -d '{v2_request}'",
        f"  curl -s {api}/models/iris/predict -H 'Content-Type: application/json' \\",
        "    -H 'X-Turnout-Alias: staging' \\",
        f"    -d '{{\"instances\": [{IRIS_ROW}]}}'",
        "",
        # Files in the project would restart chalice local (it watches the
        # project directory) and be left behind as untracked files: use /tmp.
        "Batch (in another shell, in this directory; files go to /tmp):",
        f"  export AWS_ENDPOINT_URL={moto} AWS_DEFAULT_REGION={REGION} \\",
        "    AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing",
        f"  printf '{IRIS_CSV}' > /tmp/iris.csv",
        f"  aws s3 cp /tmp/iris.csv s3://{batch}/{upload}",
        f"  aws s3 ls --recursive s3://{batch}/outgoing/",
        '  without the AWS CLI: .venv/bin/python -c "import boto3; '
        f"boto3.client('s3').upload_file('/tmp/iris.csv', '{batch}', '{upload}')\"",
    ]
    return "\n".join(lines)


def _port_from_environment(variable: str, default: int) -> int:
    raw = os.environ.get(variable, "")
    try:
        return int(raw) if raw else default
    except ValueError:
        raise SystemExit(f"{variable}={raw!r} is not a port number") from None


def _count_from_environment(variable: str, default: int) -> int:
    raw = os.environ.get(variable, "")
    try:
        return int(raw) if raw else default
    except ValueError:
        raise SystemExit(f"{variable}={raw!r} is not a count") from None


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.devstack",
        description="Run Turnout on this machine: moto server, demo registry, "
        "chalice local and S3 event delivery, all on 127.0.0.1.",
    )
    parser.add_argument(
        "--moto-port",
        type=int,
        default=_port_from_environment("TURNOUT_DEV_MOTO_PORT", 5000),
        help="moto server's port (TURNOUT_DEV_MOTO_PORT, default 5000; 0: any)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=_port_from_environment("TURNOUT_DEV_PORT", 8000),
        help="chalice local's port (TURNOUT_DEV_PORT, default 8000; 0: any)",
    )
    parser.add_argument("--stage", default=STAGE, help="Chalice stage (dev)")
    parser.add_argument(
        "--no-autoreload",
        dest="autoreload",
        action="store_false",
        help="do not restart chalice local when the code changes",
    )
    commands = parser.add_subparsers(dest="command")
    pump = commands.add_parser("pump", help="(internal) the event pump process")
    pump.add_argument("queue_url")
    pump.add_argument("--stage", default=STAGE)
    pump.add_argument("--function", default=BATCH_FUNCTION)
    pump.add_argument("--messages", action="store_true")
    return parser.parse_args(argv)


def _stop_on_sigterm(signal_number: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the same orderly stop as Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    if arguments.command == "pump":
        run_event_pump(
            arguments.queue_url,
            stage=arguments.stage,
            function_name=arguments.function,
            messages=arguments.messages,
        )
        return 0
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    # A shell starting us in the background ignores SIGINT; Ctrl-C must work.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for variable in _FOREIGN_AWS_VARIABLES:
        os.environ.pop(variable, None)
    try:
        with DevStack(
            moto_port=arguments.moto_port,
            api_port=arguments.port,
            stage=arguments.stage,
            autoreload=arguments.autoreload,
        ) as stack:
            print(banner(stack), flush=True)
            print("ready (Ctrl-C stops everything)", flush=True)
            while True:
                stack.check_running()
                time.sleep(1.0)
    except KeyboardInterrupt:
        print("\nstopped", flush=True)
        return 0
    except ChildExitedError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
