"""A stand-in for Lambda's Python runtime, run as a child process by
``test_lambda_extension``: the function's init (importing ``app`` with
``AWS_LAMBDA_RUNTIME_API`` set), then the runtime's loop against that API: ask
for the next invocation, call the handler, post its response, as
``awslambdaric`` does.

The container's after-response work is journaled to the fake API (``/test/``
paths): when it starts, and how many tasks it ran once done. Before running,
the work waits until the fake API has the invocation's response: if the
response waited for the work, neither would ever happen and the test fails.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from typing import Any


def call(path: str, body: bytes | None = None) -> tuple[Any, bytes]:
    url = f"http://{os.environ['AWS_LAMBDA_RUNTIME_API']}{path}"
    request = urllib.request.Request(url, data=body, method="POST" if body else "GET")
    with urllib.request.urlopen(request) as response:
        return response.headers, response.read()


def journal(entry: str) -> None:
    call("/test/journal", entry.encode())


def main() -> int:
    # The function's init: importing the handler module registers the extension.
    from chalice.local import LambdaContext

    from app import app
    from chalicelib import extension, wiring

    work = wiring.container().work
    if not (extension.active() and work.deferred):
        raise SystemExit("the extension did not register during init")
    run_pending = work.run_pending

    def journaled() -> int:
        journal("work started")
        call("/test/responded")
        ran = run_pending()
        journal(f"work done: {ran} tasks")
        return ran

    work.run_pending = journaled  # type: ignore[method-assign]

    while True:
        headers, body = call("/2018-06-01/runtime/invocation/next")
        request_id = headers["Lambda-Runtime-Aws-Request-Id"]
        context = LambdaContext("turnout", memory_size=2048)
        result = app(json.loads(body), context)
        call(
            f"/2018-06-01/runtime/invocation/{request_id}/response",
            json.dumps(result).encode(),
        )
        sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
