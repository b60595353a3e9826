"""Work after the answer on Lambda: the internal extension against a fake Lambda
Runtime API and Extensions API (pytest-localserver), with the app as Lambda's
Python runtime would run it (``tests/e2e/runtime_api_child.py``), on the dev
stack's moto server."""

from __future__ import annotations

import json
import signal
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
from tests.demo_support import ROOT
from tests.emf_support import emf_lines
from tools.devstack.clients import aws_environment
from tools.devstack.processes import ChildProcess
from tools.devstack.seed import create_buckets
from tools.devstack.stack import DevStack
from tools.devstack.stage import stage_environment

WAIT = 60.0  # seconds: a loaded 2-core machine is slow to import onnxruntime
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
        self._shutdown_events: list[dict[str, Any]] = []
        self._served = 0
        self._closed = False

    def invoke(self, event: dict[str, Any]) -> None:
        with self._changed:
            self._invocations.append(event)
            self._changed.notify_all()

    def shut_down(self, runtime: ChildProcess) -> None:
        """Lambda's shutdown phase: SIGTERM to the runtime process (an external
        extension is registered), SHUTDOWN to the external extension."""
        runtime.process.send_signal(signal.SIGTERM)
        with self._changed:
            self._shutdown_events.append({"eventType": "SHUTDOWN"})
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
            name = request.headers["Lambda-Extension-Name"]
            events = json.loads(request.get_data())["events"]
            # The internal extension asks for INVOKE, the layer's external one
            # for SHUTDOWN alone.
            assert (name, events) in [
                ("turnout-after-response", ["INVOKE"]),
                ("turnout-shutdown", ["SHUTDOWN"]),
            ]
            self._record(f"extension register {name}")
            return Response(
                json.dumps({"functionName": "turnout"}),
                headers={"Lambda-Extension-Identifier": name},
            )
        if path == "/2020-01-01/extension/event/next":
            name = request.headers["Lambda-Extension-Identifier"]
            if name == "turnout-shutdown":
                self._record("shutdown extension next")
                self._take(self._shutdown_events)
                return Response(json.dumps({"eventType": "SHUTDOWN"}))
            assert name == "turnout-after-response"
            self._record("extension next")
            event = self._take(self._extension_events)
            return Response(json.dumps(event or {"eventType": "SHUTDOWN"}))
        if path == "/2018-06-01/runtime/invocation/next":
            self._record("runtime next")
            invocation = self._take(self._invocations)
            if invocation is None:
                return Response("closed", status=500)
            self._served += 1
            request_id = f"invocation-{self._served}"
            deadline = int((time.time() + 30) * 1000)
            with self._changed:
                self._extension_events.append(
                    {
                        "eventType": "INVOKE",
                        "deadlineMs": deadline,
                        "requestId": request_id,
                    }
                )
                self._changed.notify_all()
            return Response(
                json.dumps(invocation),
                headers={
                    "Lambda-Runtime-Aws-Request-Id": request_id,
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


# -- the evidence must arrive ------------------------------------------------------


def start_runtime(
    dev_stack: DevStack, api: str, tmp_path: Path, **environment: str
) -> ChildProcess:
    """The function's runtime process against the fake API, as Lambda runs it."""
    return ChildProcess(
        "lambda runtime",
        [sys.executable, "-m", "tests.e2e.runtime_api_child"],
        environment=aws_environment(dev_stack.endpoint_url)
        | stage_environment()
        | {
            "AWS_LAMBDA_RUNTIME_API": api,
            "TURNOUT_MODEL_CACHE_DIR": str(tmp_path / "models"),
            **environment,
        },
        log=tmp_path / "runtime.log",
    )


def captured_ids(dev_stack: DevStack, alias: str) -> list[list[str]]:
    """The request ids of each capture object of ``alias`` (its summaries left
    out), oldest first."""
    listing = dev_stack.s3.list_objects_v2(
        Bucket=CAPTURE_BUCKET, Prefix=f"capture/iris/{alias}/"
    ).get("Contents", [])
    objects = []
    for item in sorted(listing, key=lambda item: item["Key"]):
        if not item["Key"].endswith(".jsonl.gz"):
            continue
        body = dev_stack.s3.get_object(Bucket=CAPTURE_BUCKET, Key=item["Key"])
        objects.append([r["request_id"] for r in read_capture(body["Body"].read())])
    return sorted(objects, key=len)


def captured_request(app: Any, alias: str) -> dict[str, Any]:
    return proxy_event(
        app,
        "POST",
        "/models/iris/predict",
        {"Content-Type": "application/json", "X-Turnout-Alias": alias},
        json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}),
    )


def test_a_lone_captured_request_is_in_s3_before_the_container_may_freeze(
    dev_stack: DevStack,
    fake_lambda: tuple[FakeLambda, str],
    tmp_path: Path,
) -> None:
    """One request and no more traffic, with the default batching (100 requests,
    60 s): a quiet container writes it after its own invocation, before the
    extension's ``next`` lets Lambda freeze the environment."""
    from app import app

    fake, api = fake_lambda
    create_buckets(dev_stack.s3, CAPTURE_BUCKET)
    dev_stack.aliases.set_routing("iris", "lone", {1: 100}, actor="tests")
    dev_stack.aliases.set_capture("iris", "lone", Capture(100), actor="tests")
    fake.invoke(captured_request(app, "lone"))
    runtime = start_runtime(dev_stack, api, tmp_path)
    try:
        fake.wait_for(lambda journal: journal.count("extension next") == 2, WAIT)
        # The environment may freeze from here on: the request must be in S3.
        ids = captured_ids(dev_stack, "lone")
    except AssertionError:
        raise AssertionError(runtime.log_tail()) from None
    finally:
        runtime.stop()
    (answer,) = fake.responses.values()
    assert ids == [[answer["headers"]["X-Request-Id"]]]


def test_at_shutdown_the_runtime_writes_what_its_buffer_holds(
    dev_stack: DevStack,
    fake_lambda: tuple[FakeLambda, str],
    tmp_path: Path,
) -> None:
    """A busy container batches (the second request follows the first closely);
    when Lambda shuts it down, the layer's external extension having subscribed
    to SHUTDOWN, the runtime gets SIGTERM and writes its buffer."""
    from app import app

    fake, api = fake_lambda
    create_buckets(dev_stack.s3, CAPTURE_BUCKET)
    dev_stack.aliases.set_routing("iris", "busy", {1: 100}, actor="tests")
    dev_stack.aliases.set_capture("iris", "busy", Capture(100), actor="tests")
    shutdown_extension = ChildProcess(
        "turnout-shutdown",
        [sys.executable, str(ROOT / "tools" / "extensions" / "turnout-shutdown")],
        environment={"AWS_LAMBDA_RUNTIME_API": api},
        log=tmp_path / "extension.log",
    )
    runtime = start_runtime(
        dev_stack, api, tmp_path, TURNOUT_CAPTURE_FLUSH_SECONDS="3600"
    )
    try:
        fake.wait_for(lambda journal: "shutdown extension next" in journal, WAIT)
        fake.invoke(captured_request(app, "busy"))
        fake.wait_for(lambda journal: journal.count("extension next") == 2, WAIT)
        fake.invoke(captured_request(app, "busy"))
        fake.wait_for(lambda journal: journal.count("extension next") == 3, WAIT)
        # The first request was written at once (nothing came before it); the
        # second waits in the buffer for more.
        assert len(captured_ids(dev_stack, "busy")) == 1
        fake.shut_down(runtime)
        assert runtime.process.wait(WAIT) == 0
        assert shutdown_extension.process.wait(WAIT) == 0
    except AssertionError as error:
        raise AssertionError(f"{error}\n{runtime.log_tail()}") from None
    finally:
        runtime.stop()
        shutdown_extension.stop()
    answers = [fake.responses[f"invocation-{n}"] for n in (1, 2)]
    first, second = (answer["headers"]["X-Request-Id"] for answer in answers)
    assert captured_ids(dev_stack, "busy") == [[first], [second]]
    assert "extension register turnout-shutdown" in fake.journal
