"""A moto server that enforces IAM, seeded like a fresh deployment of one stage.

Setup runs unchecked (moto's ``INITIAL_NO_AUTH_ACTION_COUNT`` starts infinite);
then ``/moto-api/reset-auth`` sets it to 0 and every later request is checked
against the caller's IAM policies, resources included. Each function of the
stage gets an IAM user holding exactly its policy file from ``.chalice/``.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import boto3

from chalicelib.registry.versions import Registry
from tools.devstack.clients import aws_environment
from tools.devstack.notifications import create_shard_queue
from tools.devstack.processes import Server
from tools.devstack.seed import create_buckets, seed_registry
from tools.devstack.stage import LOOPBACK, REGION, ROOT, stage_settings

if TYPE_CHECKING:
    from chalice.test import Client
    from mypy_boto3_s3 import S3Client

STAGE = "dev"
FUNCTIONS = ("api", "batch", "shard", "feedback", "rollout")
# moto refuses multipart parts under 5 MiB; a small limit lets a test file of a
# few thousand rows take the batch function's multipart path.
PART_BYTES = 64 * 1024
# ``with app_as(keys, **settings) as client``: the ``app_as`` fixture's type.
AppAs = Callable[..., AbstractContextManager["Client"]]
ADMIN_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}


def policy_path(stage: str, function: str) -> Path:
    return ROOT / ".chalice" / f"policy-{stage}-{function}.json"


def load_policy(stage: str, function: str) -> dict[str, Any]:
    """The policy document ``.chalice/`` gives ``function`` in ``stage``."""
    document: dict[str, Any] = json.loads(policy_path(stage, function).read_text())
    return document


def as_moto_checks_it(policy: dict[str, Any]) -> dict[str, Any]:
    """``policy`` with its SQS statements as moto can check them: on any resource
    (moto matches SQS requests against the resource ``*``; only S3 requests name
    theirs), and with the batch actions that AWS authorizes as their single
    action (SendMessageBatch as SendMessage) under moto's own names; CloudWatch's
    actions also under moto's prefix for them (``monitoring:``). The queue
    ARNs are proven by ``expected_grants`` instead; the actions, here."""
    statements = []
    for statement in policy["Statement"]:
        actions = statement["Action"]
        if all(action.startswith("sqs:") for action in actions):
            batched = [f"{action}Batch" for action in actions if action in _BATCHED]
            statement = {**statement, "Action": actions + batched, "Resource": ["*"]}
        if all(action.startswith("cloudwatch:") for action in actions):
            # moto names CloudWatch's actions by its endpoint's prefix.
            named = [action.replace("cloudwatch:", "monitoring:") for action in actions]
            statement = {**statement, "Action": actions + named}
        statements.append(statement)
    return {**policy, "Statement": statements}


_BATCHED = ("sqs:SendMessage", "sqs:DeleteMessage")


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str

    def environment(self, endpoint_url: str) -> dict[str, str]:
        """What a function's process sees: these keys, the moto endpoint."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_ENDPOINT_URL": endpoint_url,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }


class IamStack:
    """The enforcing moto server; ``admin`` is an S3 client allowed everything
    (the test's own hands), ``credentials[function]`` each function's keys."""

    def __init__(self, log: Path) -> None:
        self.server = Server(
            "moto server (IAM enforced)",
            lambda port: [
                *(sys.executable, "-m", "moto.server"),
                *("-H", LOOPBACK, "-p", str(port)),
            ],
            port=0,
            probe_path="/moto-api/",
            environment={
                **aws_environment(None),
                "S3_UPLOAD_PART_MIN_SIZE": str(PART_BYTES),
            },
            log=log,
        )
        self.settings = stage_settings(STAGE)
        self.credentials: dict[str, Credentials] = {}

    def __enter__(self) -> IamStack:
        self.server.start()
        try:
            self.server.wait_until_ready(60.0)
            self._seed()
        except BaseException:
            self.server.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.stop()

    @property
    def endpoint_url(self) -> str:
        return self.server.url

    def _seed(self) -> None:
        # Before enforcement any keys will do: moto's own test keys make the admin.
        self.admin_keys = self._create_user(
            self.client("iam", Credentials("testing", "testing")),
            "turnout-test-admin",
            ADMIN_POLICY,
        )
        self.admin: S3Client = self.client("s3", self.admin_keys)
        create_buckets(
            self.admin,
            self.settings.model_bucket,
            self.settings.batch_bucket,
            self.settings.capture_bucket,
        )
        seed_registry(
            Registry(self.admin, self.settings.model_bucket, max_model_bytes=1 << 20),
            actor="iam test",
        )
        self.shard_queue_url = create_shard_queue(
            self.client("sqs", self.admin_keys),
            self.settings.batch_shard_queue,
            attempts=self.settings.batch_shard_attempts,
        )
        for function in FUNCTIONS:
            self.credentials[function] = self.create_user(
                f"turnout-{STAGE}-{function}",
                as_moto_checks_it(load_policy(STAGE, function)),
            )
        self._enforce()

    def create_user(self, name: str, policy: dict[str, Any]) -> Credentials:
        """An IAM user holding exactly ``policy``; its access keys."""
        return self._create_user(self.client("iam", self.admin_keys), name, policy)

    @staticmethod
    def _create_user(iam: Any, name: str, policy: dict[str, Any]) -> Credentials:
        iam.create_user(UserName=name)
        iam.put_user_policy(
            UserName=name, PolicyName=name, PolicyDocument=json.dumps(policy)
        )
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return Credentials(key["AccessKeyId"], key["SecretAccessKey"])

    def client(
        self, service: Literal["s3", "iam", "sqs", "cloudwatch"], keys: Credentials
    ) -> Any:
        """A boto3 client on the moto server with ``keys``."""
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=keys.access_key_id,
            aws_secret_access_key=keys.secret_access_key,
        )

    def _enforce(self) -> None:
        request = urllib.request.Request(
            self.endpoint_url + "/moto-api/reset-auth",
            data=b"0",
            # A form content type would hide the body from moto (Flask parses it).
            headers={"Content-Type": "text/plain"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
