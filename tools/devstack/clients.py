"""AWS for the dev stack: fake credentials, a child's environment pointed at the
moto server, and clients on it."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import boto3

from tools.devstack.stage import REGION

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient


FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
# Anything that could send a child to a real account or endpoint, or make
# botocore ignore AWS_ENDPOINT_URL.
FOREIGN_AWS_VARIABLES = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
)


def aws_environment(endpoint_url: str | None) -> dict[str, str]:
    """This process's environment made safe for a child: fake credentials, a fixed
    region, and every AWS client pointed at ``endpoint_url`` (None: at no endpoint
    in particular, for moto's in-process mock)."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in FOREIGN_AWS_VARIABLES and not key.startswith("AWS_ENDPOINT_URL")
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
