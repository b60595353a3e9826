"""What a batch handler hands its work: one runtime object per invocation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from chalicelib.clock import utc_now

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from chalicelib.batch.fanout.messages import ShardQueue
    from chalicelib.config import Settings
    from chalicelib.observe import Observer
    from chalicelib.predictor import Predictor


@dataclass(frozen=True)
class BatchRuntime:
    """The collaborators of a batch invocation (a whole file or one shard).

    ``seconds_left`` says how long the function may still run; ``clock`` gives
    the time the job record is written with. ``observers`` get each file ended
    here as one Observation; ``shard_queue`` is where a file too large for one
    invocation sends its shards (None: every file runs in one invocation).
    """

    s3: S3Client
    predictor: Predictor
    settings: Settings
    seconds_left: Callable[[], float]
    clock: Callable[[], datetime] = field(default=utc_now)
    observers: Observer | None = None
    shard_queue: ShardQueue | None = None
