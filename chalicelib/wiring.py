"""Per-container wiring: every collaborator the functions use, built lazily once
and kept while the Lambda container is warm.

A Container holds the settings, the AWS clients, the clocks and the random source
and builds the registry, the caches, the prediction core, the observers (the
metrics line, shadow runs, data capture), the work done after answers and the
REST API from them, each on first use (a health check builds none of the model
machinery). ``app.py`` asks ``container()`` for what a handler needs; tests
``install`` a container of their own, with a moto client, a fake clock and a
seeded random source.
"""

from __future__ import annotations

import functools
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

from chalicelib import extension
from chalicelib.aliases.cache import AliasCache
from chalicelib.background import BackgroundWork
from chalicelib.config import Settings, function_memory_bytes, intra_op_threads
from chalicelib.emf import MetricsLog
from chalicelib.model_files import ArtifactFiles
from chalicelib.observe import Observer, Observers
from chalicelib.predictor import Predictor
from chalicelib.registry.cache import ManifestCache
from chalicelib.registry.versions import Registry
from chalicelib.sessions import ModelCache
from chalicelib.shadow import ShadowRuns

if TYPE_CHECKING:
    import botocore.session
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

    from chalicelib.batch.fanout.messages import ShardQueue
    from chalicelib.batch.runtime import BatchRuntime
    from chalicelib.capture import DataCapture
    from chalicelib.dataplane import DataPlane
    from chalicelib.feedback import Feedback
    from chalicelib.rest import RestApi


def _aws_session() -> botocore.session.Session:
    """A botocore session, which a container's clients share. Clients come from
    botocore, not boto3: boto3's import brings s3transfer and the resource layer,
    which nothing here uses (batch uploads and downloads go through
    ``chalicelib.batch.s3io``), and costs a cold start tens of milliseconds."""
    import botocore.session

    return botocore.session.get_session()


def _s3_client(session: botocore.session.Session) -> S3Client:
    """An S3 client; honours AWS_ENDPOINT_URL (moto locally)."""
    return cast("S3Client", session.create_client("s3"))


def _batch_s3_client(session: botocore.session.Session) -> S3Client:
    """The batch function's S3 client: like ``_s3_client`` but without the SDK's
    own checksum on every request and response. Batch jobs move gigabytes; TLS
    already protects them in transit and S3 checksums what it stores, while the
    SDK's CRC32 (and the chunked encoding it uploads with) costs the function
    CPU it needs for predicting."""
    from botocore.config import Config

    config = Config(
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return cast("S3Client", session.create_client("s3", config=config))


def _sqs_client(session: botocore.session.Session) -> SQSClient:
    """An SQS client; honours AWS_ENDPOINT_URL (moto locally)."""
    return cast("SQSClient", session.create_client("sqs"))


class Container:
    """What one Lambda container builds once.

    ``settings`` defaults to the environment read on first use (Chalice applies
    the stage's environment before the first handler runs), with ``overrides``
    (read then too) on top. ``s3``, ``batch_s3`` and ``sqs`` default to real clients
    (moto when AWS_ENDPOINT_URL says so); ``clock`` is monotonic seconds,
    ``wall_clock`` seconds since the epoch (metric and capture times) and ``rng``
    the random source of the traffic split, shadow and capture sampling.
    ``observers`` replaces the default ones; ``work`` runs what is done after
    answers (deferred to the extension on Lambda, on a thread elsewhere).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        overrides: Mapping[str, Any] | None = None,
        s3: S3Client | None = None,
        batch_s3: S3Client | None = None,
        sqs: SQSClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        observers: Sequence[Observer] | None = None,
        work: BackgroundWork | None = None,
    ) -> None:
        self._settings = settings
        self._overrides = overrides or {}
        self._s3 = s3
        self._batch_s3 = batch_s3
        self._sqs = sqs
        self.clock = clock
        self.wall_clock = wall_clock
        self.rng = rng or random.Random()
        self._observers = observers
        self._work = work

    @functools.cached_property
    def settings(self) -> Settings:
        base = self._settings or Settings.from_env()
        return replace(base, **self._overrides) if self._overrides else base

    @functools.cached_property
    def aws_session(self) -> botocore.session.Session:
        """The session the container's own clients come from (its credentials
        are read once, on first use)."""
        return _aws_session()

    @functools.cached_property
    def s3(self) -> S3Client:
        return self._s3 or _s3_client(self.aws_session)

    @functools.cached_property
    def batch_s3(self) -> S3Client:
        return self._batch_s3 or self._s3 or _batch_s3_client(self.aws_session)

    @functools.cached_property
    def sqs(self) -> SQSClient:
        return self._sqs or _sqs_client(self.aws_session)

    @functools.cached_property
    def shard_queue(self) -> ShardQueue | None:
        """Where the batch function sends a fanned-out file's shards (None when
        the stage names no queue: every file runs in one invocation)."""
        from chalicelib.batch.fanout.messages import SqsShardQueue

        name = self.settings.batch_shard_queue
        return SqsShardQueue(lambda: self.sqs, name) if name else None

    def batch_runtime(self, seconds_left: Callable[[], float]) -> BatchRuntime:
        """What a batch invocation (a file or one shard) works with; it may run
        for ``seconds_left()`` more seconds."""
        from chalicelib.batch.runtime import BatchRuntime

        return BatchRuntime(
            s3=self.batch_s3,
            predictor=self.predictor,
            settings=self.settings,
            seconds_left=seconds_left,
            observers=self.observers,
            shard_queue=self.shard_queue,
        )

    @functools.cached_property
    def registry(self) -> Registry:
        settings = self.settings
        return Registry(
            self.s3, settings.model_bucket, max_model_bytes=settings.max_model_bytes
        )

    @functools.cached_property
    def predictor(self) -> Predictor:
        settings = self.settings
        registry = self.registry
        manifests = ManifestCache(
            registry, settings.manifest_cache_seconds, clock=self.clock
        )
        return Predictor(
            registry,
            AliasCache(
                self.s3,
                settings.model_bucket,
                settings.alias_cache_seconds,
                clock=self.clock,
                manifests=manifests,
            ),
            manifests,
            ModelCache(
                registry.open_artifact,
                ArtifactFiles(settings.model_cache_dir, settings.file_cache_bytes),
                settings.session_cache_bytes,
                fetch_data_file=registry.open_data_file,
                tmp_bytes=settings.tmp_bytes,
                memory_bytes=function_memory_bytes(),
                threads=intra_op_threads(
                    settings.session_threads,
                    os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"),
                    os.cpu_count(),
                ),
                spinning=settings.session_spinning,
                failure_seconds=settings.integrity_failure_seconds,
                clock=self.clock,
            ),
            default_alias=settings.default_alias,
            draw=self.rng.random,
        )

    @functools.cached_property
    def work(self) -> BackgroundWork:
        return self._work or BackgroundWork(deferred=extension.active())

    @functools.cached_property
    def metrics(self) -> MetricsLog:
        return MetricsLog(wall_clock=self.wall_clock, work=self.work)

    @functools.cached_property
    def observers(self) -> Observers:
        if self._observers is not None:
            return Observers(self._observers)
        metrics = self.metrics
        chosen: list[Observer] = [
            metrics,
            ShadowRuns(self.predictor, self.work, metrics.observe),
        ]
        if self.capture is not None:
            chosen.append(self.capture)
        return Observers(chosen)

    @functools.cached_property
    def capture(self) -> DataCapture | None:
        """The data capture observer; None when no capture bucket is set."""
        settings = self.settings
        if not settings.capture_bucket:
            return None
        from chalicelib.capture import DataCapture

        return DataCapture(
            self.predictor.aliases,
            self.s3,
            settings.capture_bucket,
            self.work,
            draw=self.rng.random,
            on_failure=self.metrics.capture_failed,
            on_late=self.metrics.capture_late,
            flush_records=settings.capture_flush_records,
            flush_seconds=settings.capture_flush_seconds,
            wall_clock=self.wall_clock,
            clock=self.clock,
        )

    @functools.cached_property
    def data_plane(self) -> DataPlane:
        from chalicelib.dataplane import DataPlane

        return DataPlane(self.predictor, max_rows=self.settings.max_rows)

    @functools.cached_property
    def rest_api(self) -> RestApi:
        from chalicelib.rest import RestApi

        return RestApi(
            self.data_plane,
            self.settings,
            self.observers,
            feedback=lambda: self.feedback,
        )

    @functools.cached_property
    def feedback(self) -> Feedback | None:
        """Labels accepted over REST; None when no capture bucket is set."""
        settings = self.settings
        if not settings.capture_bucket:
            return None
        from chalicelib.feedback import Feedback

        return Feedback(
            self.s3, settings.capture_bucket, self.work, **self._label_writing()
        )

    def _label_writing(self) -> dict[str, Any]:
        """How labels are written, REST or batch: counted by the metrics, with
        the capture's durability rule."""
        settings = self.settings
        return {
            "on_failure": self.metrics.feedback_failed,
            "on_late": self.metrics.feedback_late,
            "flush_records": settings.capture_flush_records,
            "flush_seconds": settings.capture_flush_seconds,
            "wall_clock": self.wall_clock,
            "clock": self.clock,
        }

    def labels_file(self, key: str) -> dict[str, Any]:
        """File the labels file uploaded at ``key`` in the batch bucket (the
        batch function's S3 event under feedback/)."""
        from chalicelib.feedback import file_labels_upload, label_buffer

        settings = self.settings
        buffer = label_buffer(
            self.batch_s3, settings.capture_bucket, self.work, **self._label_writing()
        )
        return file_labels_upload(
            self.batch_s3,
            settings.batch_bucket,
            key,
            buffer,
            wall_clock=self.wall_clock,
        )

    def flush_evidence(self) -> None:
        """Write the captured requests and labels still buffered (at shutdown,
        on SIGTERM); builds nothing that was not built."""
        built = vars(self)
        for name in ("capture", "feedback"):
            buffer = built.get(name)
            if buffer is not None:
                buffer.flush()

    def wait_for_background_work(self, timeout: float = 30.0) -> None:
        """Block until work submitted after answers (shadow runs, capture writes)
        has finished."""
        if "work" in vars(self):
            self.work.wait(timeout)


_current: Container | None = None


def container() -> Container:
    """This container's wiring, built from the environment on first use."""
    global _current
    if _current is None:
        _current = Container()
    return _current


def install(replacement: Container) -> None:
    """Use ``replacement`` from now on (tests, benchmarks)."""
    global _current
    _current = replacement


def reset() -> None:
    """Forget everything built so far (the next use reads the environment again)."""
    global _current
    _current = None


def settings() -> Settings:
    return container().settings


def predictor() -> Predictor:
    return container().predictor


def rest_api() -> RestApi:
    return container().rest_api


def preload() -> None:
    """Load the models TURNOUT_PRELOAD names (``chalicelib.preload``) now: during
    init when ``app.py`` calls it. ValueError when the setting is malformed."""
    from chalicelib.preload import parse_preload, preload_models

    targets = parse_preload(settings().preload)
    if targets:
        preload_models(predictor(), targets)
