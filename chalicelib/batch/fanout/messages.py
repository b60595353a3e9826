"""The shard messages of a fanned-out job and the queue they go through.

The batch function (``chalicelib.batch.job``) claims the file's job record as for
any job, cuts the file into line-aligned byte ranges (``plan.plan_shards``),
writes the running record with the run's plan and sends one message per shard;
each is predicted by an invocation of the shard function (``shard``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

    from chalicelib.batch.fanout.plan import Shard

# SendMessageBatch takes at most ten messages.
_SEND_BATCH = 10


@dataclass(frozen=True)
class ShardTask:
    """One shard's message: which run, which bytes, and the version to run."""

    bucket: str
    key: str
    etag: str
    run_id: str
    version: int
    index: int
    count: int
    start: int
    end: int
    data_start: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, body: str) -> ShardTask:
        """The task in a message body; ValueError when it is not one."""
        try:
            return cls(**json.loads(body))
        except (TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"not a shard message: {error}") from None


class ShardQueue(Protocol):
    """Where shard messages go."""

    def send(self, bodies: list[str]) -> None:
        """Send every body, or raise."""


class SqsShardQueue:
    """The SQS queue that feeds the shard function. Its client is made, and its
    URL looked up, on the first send: a small file's job pays for neither."""

    def __init__(self, sqs: Callable[[], SQSClient], name: str) -> None:
        self._client = sqs
        self.name = name
        self._url: str | None = None

    @functools.cached_property
    def sqs(self) -> SQSClient:
        return self._client()

    def send(self, bodies: list[str]) -> None:
        """Send every body; RuntimeError naming the first one SQS refused."""
        if self._url is None:
            self._url = self.sqs.get_queue_url(QueueName=self.name)["QueueUrl"]
        for first in range(0, len(bodies), _SEND_BATCH):
            entries = [
                {"Id": str(number), "MessageBody": body}
                for number, body in enumerate(bodies[first : first + _SEND_BATCH])
            ]
            response = self.sqs.send_message_batch(QueueUrl=self._url, Entries=entries)  # type: ignore[arg-type]
            for failed in response.get("Failed", []):
                raise RuntimeError(
                    f"SQS refused shard message {failed['Id']} on {self.name}: "
                    f"{failed.get('Code')} {failed.get('Message', '')}"
                )


def shard_tasks(
    bucket: str,
    key: str,
    etag: str,
    run_id: str,
    version: int,
    shards: list[Shard],
    data_start: int,
) -> list[ShardTask]:
    """One message per shard of the run ``run_id`` of the object at ``etag``."""
    return [
        ShardTask(
            bucket=bucket,
            key=key,
            etag=etag,
            run_id=run_id,
            version=version,
            index=shard.index,
            count=len(shards),
            start=shard.start,
            end=shard.end,
            data_start=data_start,
        )
        for shard in shards
    ]
