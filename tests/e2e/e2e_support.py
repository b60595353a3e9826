"""Real HTTP for the end-to-end tests, with nothing but the standard library."""

from __future__ import annotations

import http.client
import json
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpClient:
    """Real HTTP to ``base_url`` with http.client, which sends exactly the headers
    given (urllib would add a form Content-Type to every POST)."""

    def __init__(self, base_url: str) -> None:
        parts = urllib.parse.urlsplit(base_url)
        assert parts.hostname is not None and parts.port is not None, base_url
        self.host, self.port = parts.hostname, parts.port

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            connection.close()

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Reply:
        return self.request("GET", path, headers=headers)

    def post_json(
        self, path: str, document: Any, headers: Mapping[str, str] | None = None
    ) -> Reply:
        """POST ``document`` as JSON, with Content-Type application/json unless
        ``headers`` say otherwise."""
        return self.request(
            "POST",
            path,
            body=json.dumps(document).encode(),
            headers={"Content-Type": "application/json", **(headers or {})},
        )


def cli_environment(endpoint_url: str, **extra: str) -> dict[str, str]:
    """The environment of a ``turnout`` child process against a moto server at
    ``endpoint_url``: the test's own, less any AWS or Turnout setting, with fake
    credentials and ``extra`` on top."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "TURNOUT_"))
    }
    environment.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint_url,  # the default for --endpoint-url
        **extra,
    )
    return environment
