"""Settings: every knob is a ``TURNOUT_...`` environment variable, read once.

Stages set them in ``.chalice/config.json``; docs/operations.md documents each
one in its configuration table, which a test keeps in step with ``Settings``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

MIB = 1024 * 1024

# Lambda gives a function one vCPU's worth of time per this many MB of memory.
MB_PER_VCPU = 1769

# Batch jobs: uploads under INCOMING_PREFIX, results under OUTGOING_PREFIX.
INCOMING_PREFIX = "incoming/"
OUTGOING_PREFIX = "outgoing/"
# Labels files: uploads under FEEDBACK_PREFIX (chalicelib.feedback).
FEEDBACK_PREFIX = "feedback/"


@dataclass(frozen=True)
class Settings:
    """Everything the functions and the CLI need to know about their deployment."""

    model_bucket: str = ""
    batch_bucket: str = ""
    default_alias: str = "prod"
    # How long a warm container trusts its copy of an alias document before it
    # revalidates it with a conditional GET on the ETag.
    alias_cache_seconds: float = 5.0
    # Memory bound of the per-container session cache, counted in model bytes.
    session_cache_bytes: int = 1024 * MIB
    model_cache_dir: str = "/tmp/turnout-models"
    # The function's /tmp (Lambda's ephemeral storage, 512 to 10240 MB), as the
    # stage sets it: a model whose files are larger is refused before download.
    ephemeral_storage_mb: int = 512
    # Disk bound of the model file cache in model_cache_dir (0: three quarters of
    # ephemeral_storage_mb, see file_cache_bytes): the function may need the rest.
    model_file_cache_bytes: int = 0
    # How long a version whose artifact or signature failed its check is refused
    # without being downloaded and hashed again.
    integrity_failure_seconds: float = 60.0
    # How long a warm container trusts that a version it has read still exists
    # (a deleted version stops answering within this time).
    manifest_cache_seconds: float = 5.0
    # onnxruntime threads per request (0: the function's share of CPU on Lambda,
    # see intra_op_threads; one per core elsewhere). The batch function sets 1: it
    # already keeps the cores busy reading, parsing and uploading.
    session_threads: int = 0
    # Whether onnxruntime's idle threads spin waiting for work: they burn CPU that
    # Lambda bills and the request's own thread could use.
    session_spinning: bool = False
    max_model_bytes: int = 512 * MIB
    # API Gateway and Lambda refuse synchronous payloads over 6 MB.
    max_request_bytes: int = 6 * MIB
    max_rows: int = 10_000
    # Batch: rows predicted per session.run, and the size of output parts
    # (S3 parts are at least 5 MiB, all but the last).
    batch_rows_per_chunk: int = 50_000
    batch_part_bytes: int = 8 * MIB
    # Batch: bytes read from S3 at a time (the stored, compressed bytes for .gz).
    batch_read_bytes: int = 4 * MIB
    # Stop a batch job before the Lambda timeout, to write its manifest: this share
    # of the time the function had when the job started, at most
    # batch_safety_seconds (a function with 3 s still gets 2.7 s of work).
    batch_safety_seconds: float = 20.0
    batch_safety_fraction: float = 0.1
    # Data capture (per alias, `turnout capture set`): the bucket written to
    # (capture is off when unset), and when a container writes its buffer: once
    # it holds this many requests, or its oldest is this old as a request comes.
    capture_bucket: str = ""
    capture_flush_records: int = 100
    capture_flush_seconds: float = 60.0
    # Fan-out: an uncompressed file larger than this (0: none) is cut into shards of
    # about this size, each predicted by its own invocation of the shard function,
    # fed by the SQS queue batch_shard_queue. A shard that failed this many times
    # (the queue's maxReceiveCount) fails the job and goes to the dead-letter queue.
    batch_shard_bytes: int = 0
    batch_shard_queue: str = ""
    batch_shard_attempts: int = 3
    # A running job's manifest says how far it is at most this often.
    batch_progress_seconds: float = 5.0
    # Models loaded during init (chalicelib.preload): comma-separated model@alias
    # or model@version. Set it on the REST function only.
    preload: str = ""

    @property
    def tmp_bytes(self) -> int:
        return self.ephemeral_storage_mb * MIB

    @property
    def file_cache_bytes(self) -> int:
        """The model file cache's disk bound: model_file_cache_bytes, else three
        quarters of /tmp (384 MiB of Lambda's default 512 MB)."""
        return self.model_file_cache_bytes or self.tmp_bytes * 3 // 4

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read ``TURNOUT_<FIELD>`` variables; unset ones keep their defaults."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for field in fields(cls):
            raw = env.get(f"TURNOUT_{field.name.upper()}")
            if raw is None or raw == "":
                continue
            default = field.default
            try:
                if isinstance(default, bool):
                    values[field.name] = raw.lower() in {"1", "true", "yes"}
                elif isinstance(default, int):
                    values[field.name] = int(raw)
                elif isinstance(default, float):
                    values[field.name] = float(raw)
                else:
                    values[field.name] = raw
            except ValueError:
                raise ValueError(
                    f"TURNOUT_{field.name.upper()}={raw!r} is not a valid "
                    f"{type(default).__name__}"
                ) from None
        return cls(**values)  # type: ignore[arg-type]


def intra_op_threads(configured: int, memory_mb: str | None, cores: int | None) -> int:
    """onnxruntime's threads per request: ``configured`` when positive; else, on
    Lambda (``memory_mb``, its AWS_LAMBDA_FUNCTION_MEMORY_SIZE, is set), the
    function's share of CPU, one thread per 1,769 MB rounded, at least 1 and at
    most ``cores``; else 0 (onnxruntime's choice, one per core)."""
    if configured > 0:
        return configured
    if not memory_mb:
        return 0
    share = int(int(memory_mb) / MB_PER_VCPU + 0.5)
    return max(1, min(share, cores or 1))


def function_memory_bytes(env: Mapping[str, str] | None = None) -> int | None:
    """The Lambda function's memory (Lambda sets AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    in MB); None outside Lambda."""
    env = os.environ if env is None else env
    raw = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    return int(raw) * MIB if raw.isdigit() else None
