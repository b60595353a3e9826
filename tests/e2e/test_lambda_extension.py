"""Work after the answer on Lambda: the internal extension against a fake Lambda
Runtime API and Extensions API (pytest-localserver), with the app as Lambda's
Python runtime would run it (``tests/e2e/runtime_api_child.py``), on the dev
stack's moto server."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_localserver.http import WSGIServer
from werkzeug.wrappers import Request, Response

from bench.rest import proxy_event
from chalicelib.aliases.document import Capture, Shadow
from chalicelib.capture import read_capture
from tests.emf_support import emf_lines
from tools.devstack.clients import aws_environment
from tools.devstack.processes import ChildProcess
from tools.devstack.seed import create_buckets
from tools.devstack.stack import DevStack
from tools.devstack.stage import stage_environment

WAIT = 60.0  # seconds: a loaded 2-core machine is slow to import onnxruntime
REQUEST_ID = "invocation-1"
CAPTURE_BUCKET = "turnout-capture-dev"


class FakeLambda:
    """The Runtime API and the Extensions API of one execution environment,
    journaling every call in the order it arrives."""

    def __init__(self) -> None:
        self.journal: list[str] = []
        self.responses: dict[str, Any] = {}
        self._changed = threading.Condition()
        self._invocations: list[dict[str, Any]] = []
        self._extension_events: list[dict[str, Any]] = []
        self._closed = False

    def invoke(self, event: dict[str, Any]) -> None:
        with self._changed:
            self._invocations.append(event)
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def wait_for(self, entry: Callable[[list[str]], bool], timeout: float) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: entry(self.journal), timeout):
                raise AssertionError(f"timed out; journal: {self.journal}")

    def _record(self, entry: str) -> None:
        with self._changed:
            self.journal.append(entry)
            self._changed.notify_all()

    def _take(self, queue: list[dict[str, Any]]) -> dict[str, Any] | None:
        with self._changed:
            self._changed.wait_for(lambda: queue or self._closed, WAIT)
            return queue.pop(0) if queue else None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        return self._route(request)(environ, start_response)

    def _route(self, request: Request) -> Response:
        path = request.path
        if path == "/2020-01-01/extension/register":
            assert json.loads(request.get_data()) == {"events": ["INVOKE"]}
            self._record(
                f"extension register {request.headers['Lambda-Extension-Name']}"
            )
            return Response(
                json.dumps({"functionName": "turnout"}),
                headers={"Lambda-Extension-Identifier": "extension-1"},
            )
        if path == "/2020-01-01/extension/event/next":
            assert request.headers["Lambda-Extension-Identifier"] == "extension-1"
            self._record("extension next")
            event = self._take(self._extension_events)
            return Response(json.dumps(event or {"eventType": "SHUTDOWN"}))
        if path == "/2018-06-01/runtime/invocation/next":
            self._record("runtime next")
            invocation = self._take(self._invocations)
            if invocation is None:
                return Response("closed", status=500)
            deadline = int((time.time() + 30) * 1000)
            with self._changed:
                self._extension_events.append(
                    {
                        "eventType": "INVOKE",
                        "deadlineMs": deadline,
                        "requestId": REQUEST_ID,
                    }
                )
                self._changed.notify_all()
            return Response(
                json.dumps(invocation),
                headers={
                    "Lambda-Runtime-Aws-Request-Id": REQUEST_ID,
                    "Lambda-Runtime-Deadline-Ms": str(deadline),
                },
            )
        if path.endswith("/response"):
            self.responses[path.split("/")[-2]] = json.loads(request.get_data())
            self._record("response posted")
            return Response(status=202)
        if path == "/test/journal":
            self._record(request.get_data(as_text=True))
            return Response()
        if path == "/test/responded":
            self.wait_for(lambda journal: "response posted" in journal, WAIT)
            return Response()
        return Response(f"no route {path}", status=404)


@pytest.fixture
def fake_lambda() -> Iterator[tuple[FakeLambda, str]]:
    fake = FakeLambda()
    server = WSGIServer(application=fake, threaded=True)
    server.start()
    host, port = server.server_address
    yield fake, f"{host}:{port}"
    fake.close()
    server.stop()


def test_the_response_is_posted_and_the_extension_asks_for_next_only_after_the_work(
    dev_stack: DevStack,
    fake_lambda: tuple[FakeLambda, str],
    tmp_path: Path,
) -> None:
    from app import app

    fake, api = fake_lambda
    create_buckets(dev_stack.s3, CAPTURE_BUCKET)
    aliases = dev_stack.aliases
    aliases.set_routing("iris", "lambda", {1: 100}, shadow=Shadow(2, 100), actor="t")
    aliases.set_capture("iris", "lambda", Capture(100), actor="tests")
    fake.invoke(
        proxy_event(
            app,
            "POST",
            "/models/iris/predict",
            {"Content-Type": "application/json", "X-Turnout-Alias": "lambda"},
            json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}),
        )
    )
    log = tmp_path / "runtime.log"
    runtime = ChildProcess(
        "lambda runtime",
        [sys.executable, "-m", "tests.e2e.runtime_api_child"],
        environment=aws_environment(dev_stack.endpoint_url)
        | stage_environment()
        | {
            "AWS_LAMBDA_RUNTIME_API": api,
            "TURNOUT_CAPTURE_FLUSH_RECORDS": "1",
            "TURNOUT_MODEL_CACHE_DIR": str(tmp_path / "models"),
        },
        log=log,
    )
    try:
        fake.wait_for(lambda journal: journal.count("extension next") == 2, WAIT)
    except AssertionError:
        raise AssertionError(runtime.log_tail()) from None
    finally:
        runtime.stop()

    journal = fake.journal
    # Registered during init, before the runtime asked for its first invocation.
    assert journal[0] == "extension register turnout-after-response"
    assert journal.index("runtime next") > 0
    assert journal.index("extension next") < journal.index("response posted")
    # The work started once the handler had returned; the response never waited
    # for it (the harness holds the work until the response is in); and the
    # extension asked for its next event, letting Lambda freeze the environment,
    # only once the work was done: the request's metrics line, the shadow run
    # (and its line) and the capture write.
    assert journal.index("response posted") < journal.index("work done: 4 tasks")
    assert [entry for entry in journal if entry != "runtime next"][-2:] == [
        "work done: 4 tasks",
        "extension next",
    ]

    (answer,) = fake.responses.values()
    assert answer["statusCode"] == 200
    request_id = answer["headers"]["X-Request-Id"]
    lines = emf_lines(log.read_text())
    assert [(line["event"], line["request_id"]) for line in lines] == [
        ("prediction", request_id),
        ("shadow", request_id),
    ]
    listing = dev_stack.s3.list_objects_v2(
        Bucket=CAPTURE_BUCKET, Prefix="capture/iris/lambda/"
    )["Contents"]
    (item,) = [item for item in listing if item["Key"].endswith(".jsonl.gz")]
    body = dev_stack.s3.get_object(Bucket=CAPTURE_BUCKET, Key=item["Key"])["Body"]
    assert [record["request_id"] for record in read_capture(body.read())] == [
        request_id
    ]
