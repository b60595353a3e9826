"""What the end-to-end tests share: real HTTP with nothing but the standard
library, the environment of a ``turnout`` child process, and ``eventually``, the
one way to wait for what the stack does in the background."""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any

import pytest

# Startup on a loaded 2-core machine can be slow; a healthy stack takes seconds.
STARTUP_TIMEOUT = 120.0


def eventually[T](
    condition: Callable[[], T | None],
    *,
    timeout: float = 30.0,
    interval: float = 0.2,
    message: str | Callable[[], str] = "the condition never held",
) -> T:
    """Call ``condition`` every ``interval`` seconds until it returns something
    true, and return that; after ``timeout`` seconds, fail the test with
    ``message`` (a callable is asked at the end: the stack's logs, say) and the
    last value. ``condition`` is always called at least once."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            said = message() if callable(message) else message
            pytest.fail(f"{said} (within {timeout:g} s; last: {value!r})")
        time.sleep(interval)


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
