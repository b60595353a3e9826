"""The whole dev stack as one context manager: ``DevStack``."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TextIO

from chalicelib.config import FEEDBACK_PREFIX
from chalicelib.registry.versions import Registry
from tools.devstack.clients import cloudwatch_client, s3_client, sqs_client
from tools.devstack.emulator import (
    FEEDBACK_FUNCTION,
    SCHEDULE_SECONDS,
    SHARD_FUNCTION,
    scheduled_functions,
    start_event_pump,
    start_timer,
)
from tools.devstack.env_file import dev_environment, remove_env_file, write_env_file
from tools.devstack.notifications import connect_bucket_events, create_shard_queue
from tools.devstack.processes import (
    ChildProcess,
    Server,
    start_chalice_local,
    start_moto,
)
from tools.devstack.seed import create_buckets, seed_registry
from tools.devstack.stage import LOOPBACK, ROOT, STAGE, stage_settings
from tools.emf_forward import LogForwarder


class DevStack:
    """moto server, demo registry, S3 event pump and ``chalice local``, started on
    ``__enter__`` (ready to answer) and stopped on ``__exit__``.

    Ports 0 mean free ports. ``log_dir`` receives one log per child; without it
    chalice local and the pump write to this terminal and moto nowhere. Once
    started: ``api_url``, ``endpoint_url`` (moto), ``model_bucket``,
    ``batch_bucket``, ``queue_url`` (the batch bucket's events), ``s3`` and
    ``sqs`` (clients on moto), ``registry`` and ``aliases`` (on the model bucket).

    Each ``@app.schedule`` function of app.py runs every ``schedule_seconds``
    (``TURNOUT_DEV_SCHEDULE_SECONDS``, default 60). With ``env_file``, the stack's
    variables are written there for a shell to ``source`` (see ``env_file.py``),
    before chalice local starts watching the directory, and removed on exit.
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
        schedule_seconds: float | None = None,
        env_file: Path | None = None,
    ) -> None:
        self.stage = stage
        settings = stage_settings(stage)
        self.shard_queue_name = settings.batch_shard_queue
        self.shard_bytes = int(
            os.environ.get("TURNOUT_BATCH_SHARD_BYTES") or settings.batch_shard_bytes
        )
        self.shard_attempts = settings.batch_shard_attempts
        self.shard_workers = (
            number_from_environment("TURNOUT_DEV_SHARD_WORKERS", 2, "a count")
            if shard_workers is None
            else shard_workers
        )
        self.shard_pumps: list[ChildProcess] = []
        self.schedule_seconds = (
            number_from_environment(
                "TURNOUT_DEV_SCHEDULE_SECONDS", SCHEDULE_SECONDS, "a number of seconds"
            )
            if schedule_seconds is None
            else schedule_seconds
        )
        if not self.schedule_seconds > 0:
            raise SystemExit(
                f"scheduled functions run every so many seconds, "
                f"not {self.schedule_seconds:g}"
            )
        self.scheduled_functions = scheduled_functions((ROOT / "app.py").read_text())
        self.timers: list[ChildProcess] = []
        self.env_file = env_file
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
        self.feedback_pump: ChildProcess | None = None
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
        feedback_queue_url = connect_bucket_events(
            self.s3,
            self.sqs,
            self.batch_bucket,
            f"{self.queue_name}-feedback",
            prefix=FEEDBACK_PREFIX,
        )
        self.feedback_pump = start_event_pump(
            self.endpoint_url,
            feedback_queue_url,
            stage=self.stage,
            function_name=FEEDBACK_FUNCTION,
            log=self._log("feedback-pump"),
        )
        self._stack.callback(self.feedback_pump.stop)
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
        for function_name in self.scheduled_functions:
            timer = start_timer(
                self.endpoint_url,
                function_name,
                every=self.schedule_seconds,
                stage=self.stage,
                log=self._log(f"timer-{function_name}"),
            )
            self._stack.callback(timer.stop)
            self.timers.append(timer)
        self.api = start_chalice_local(
            self.endpoint_url,
            self._api_port,
            stage=self.stage,
            autoreload=self._autoreload,
            log=self._log("chalice-local"),
            before_launch=self._write_env_file,
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
        self.check_running()

    def _write_env_file(self, api_port: int) -> None:
        """Write ``env_file`` for chalice local on ``api_port`` (again if it
        moves to another port), and remove it on exit."""
        if self.env_file is None:
            return
        path = self.env_file
        variables = dev_environment(
            endpoint_url=self.endpoint_url,
            api_url=f"http://{LOOPBACK}:{api_port}",
            model_bucket=self.model_bucket,
            batch_bucket=self.batch_bucket,
            capture_bucket=self.capture_bucket,
        )
        write_env_file(path, variables)
        self._stack.callback(remove_env_file, path, variables)

    def check_running(self) -> None:
        """ChildExitedError if a part of the stack has stopped."""
        for server in (self.moto, self.api):
            if server is not None and server.child is not None:
                server.child.check_running()
        for child in [self.pump, self.feedback_pump, *self.shard_pumps, *self.timers]:
            if child is not None:
                child.check_running()

    def logs(self) -> str:
        """The end of each child's log (with ``log_dir``), for failure messages;
        moto's request log, the least telling, gets the least room."""
        tails = []
        for child, characters in (
            (self.pump, 4000),
            (self.feedback_pump, 2000),
            *((pump, 2000) for pump in self.shard_pumps),
            *((timer, 2000) for timer in self.timers),
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


def number_from_environment[N: (int, float)](variable: str, default: N, what: str) -> N:
    """``variable``'s value read as ``default``'s type, or ``default`` when unset;
    SystemExit naming ``what`` was expected when it is not a number."""
    raw = os.environ.get(variable, "")
    try:
        return type(default)(raw) if raw else default
    except ValueError:
        raise SystemExit(f"{variable}={raw!r} is not {what}") from None
