"""A Lambda internal extension that runs the work queued after each answer.

Lambda freezes the execution environment once the runtime has posted the
response and every extension has asked for its next event. This extension, a
thread of the function's own process, registers for INVOKE events during init
(it must: Lambda refuses registrations after the runtime's first ``next``),
then for each invocation waits until the handler has returned, runs the queued
work (shadow runs, capture writes) and only then asks for its next event. The
caller has its answer meanwhile; the environment stays awake, and billed, until
the work is done, instead of freezing it half-done until the next request.

It registers only on Lambda (``AWS_LAMBDA_RUNTIME_API`` set): under ``chalice
local`` and the test client nothing is frozen, and the work runs on a thread.
The same pattern as the ``extension-internal-flush`` example of AWS's Rust
runtime.

Internal extensions get no SHUTDOWN event. The layer ships an external one,
``/opt/extensions/turnout-shutdown`` (``tools/extensions/``), that subscribes to
SHUTDOWN and does nothing else: with an external extension registered, Lambda
sends the runtime process SIGTERM at shutdown, and ``flush_on_sigterm`` writes
what is still buffered then (AWS's graceful-shutdown pattern). Extensions API: https://docs.aws.amazon.com/lambda/latest/dg/runtimes-extensions-api.html
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger("turnout.extension")

EXTENSION_NAME = "turnout-after-response"
API_VERSION = "2020-01-01"


class InternalExtension:
    """One registered internal extension (see the module docstring).

    ``api`` is the host:port of the Runtime API (which serves the Extensions API
    too); ``drain`` runs the queued work; ``clock`` is the wall clock in seconds,
    against which an invocation's deadline is kept.
    """

    def __init__(
        self,
        api: str,
        drain: Callable[[], object],
        *,
        name: str = EXTENSION_NAME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._base = f"http://{api}/{API_VERSION}/extension"
        self._drain = drain
        self._name = name
        self._clock = clock
        self._answered = threading.Event()
        self.identifier = ""

    def register(self) -> None:
        """Register for INVOKE events (internal extensions get no SHUTDOWN)."""
        headers, _ = self._call(
            "POST",
            "/register",
            {"Lambda-Extension-Name": self._name},
            json.dumps({"events": ["INVOKE"]}).encode(),
        )
        self.identifier = headers["Lambda-Extension-Identifier"]

    def start(self) -> threading.Thread:
        """Serve invocations on a daemon thread."""
        thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
        thread.start()
        return thread

    def answered(self) -> None:
        """The handler has returned: the invocation's queued work may run."""
        self._answered.set()

    def _serve(self) -> None:
        while True:
            event = self._next()
            if event.get("eventType") != "INVOKE":
                return
            # The handler's end, or the invocation's deadline: whichever is first
            # (a handler that never says it is done must not pin the environment).
            deadline = float(event.get("deadlineMs", 0)) / 1000.0
            self._answered.wait(max(0.0, deadline - self._clock()))
            self._answered.clear()
            try:
                self._drain()
            except Exception:
                logger.exception(
                    "work after invocation %s failed", event.get("requestId")
                )

    def _next(self) -> dict[str, Any]:
        """Block until Lambda sends the next event."""
        _, body = self._call(
            "GET", "/event/next", {"Lambda-Extension-Identifier": self.identifier}
        )
        event: dict[str, Any] = json.loads(body)
        return event

    def _call(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes | None = None,
    ) -> tuple[Mapping[str, str], bytes]:
        # Imported here: only a container on Lambda talks to the Extensions API,
        # and urllib.request costs every other cold start a few milliseconds.
        import urllib.request

        request = urllib.request.Request(
            self._base + path, data=body, headers=dict(headers), method=method
        )
        # No timeout: ``event/next`` blocks until the next invocation, by design.
        with urllib.request.urlopen(request) as response:
            return response.headers, response.read()


_registered: InternalExtension | None = None


def register_at_init(
    drain: Callable[[], object], env: Mapping[str, str] | None = None
) -> InternalExtension | None:
    """On Lambda, register and start the extension (call it at import, during
    init); elsewhere do nothing. The extension, or None."""
    global _registered
    api = (os.environ if env is None else env).get("AWS_LAMBDA_RUNTIME_API")
    if not api or _registered is not None:
        return _registered
    extension = InternalExtension(api, drain)
    extension.register()
    extension.start()
    _registered = extension
    return extension


def active() -> bool:
    """Whether work after the answer waits for the extension (on Lambda)."""
    return _registered is not None


def flush_on_sigterm(flush: Callable[[], object]) -> None:
    """Run ``flush`` when the process gets SIGTERM (Lambda's shutdown, when an
    external extension is registered), then exit. Call it from the main thread,
    during init."""
    import signal

    def flush_and_exit(signum: int, frame: object) -> None:
        try:
            flush()
        except Exception:
            logger.exception("flush at shutdown failed")
        sys.exit(0)

    signal.signal(signal.SIGTERM, flush_and_exit)


def after_each_invocation(event: Any, get_response: Callable[[Any], Any]) -> Any:
    """Chalice middleware (registered for every event type on Lambda): tell the
    extension when the handler has its response, even when it raised."""
    try:
        return get_response(event)
    finally:
        if _registered is not None:
            _registered.answered()
