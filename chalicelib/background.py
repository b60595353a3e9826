"""Work done after the answer has left: shadow runs and capture writes.

Handlers ``submit`` it and return; it never runs on the caller's time. Where it
runs depends on the host:

- On Lambda (``deferred``), the environment is frozen as soon as the handler
  returns, so a background thread would be suspended until the next request and
  lost with the container. There the tasks wait in a queue, and the internal
  extension (``chalicelib.extension``) runs them once the invocation's handler
  has returned, keeping the environment awake until they are done.
- Anywhere else (``chalice local``, the test client, benchmarks) nothing is
  frozen: one worker thread runs the tasks as they come, as shadow runs always
  did.

A task that raises is logged and dropped: it never reaches a caller.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

logger = logging.getLogger("turnout.background")

Task = Callable[[], None]


class BackgroundWork:
    """A queue of tasks to run after the answer (see the module docstring)."""

    def __init__(self, *, deferred: bool = False) -> None:
        self.deferred = deferred
        self._lock = threading.Lock()
        self._pending: list[Task] = []
        self._pool: ThreadPoolExecutor | None = None
        self._futures: list[Future[None]] = []

    def submit(self, task: Task) -> None:
        """Run ``task`` after the answer: queued until ``run_pending`` when
        deferred, else on the worker thread."""
        with self._lock:
            if self.deferred:
                self._pending.append(task)
                return
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="turnout-after")
            self._futures = [f for f in self._futures if not f.done()]
            self._futures.append(self._pool.submit(_guarded, task))

    def run_pending(self) -> int:
        """Run the queued tasks, and any they queue, in this thread; how many ran."""
        ran = 0
        while True:
            with self._lock:
                tasks, self._pending = self._pending, []
            if not tasks:
                return ran
            for task in tasks:
                _guarded(task)
                ran += 1

    def wait(self, timeout: float = 30.0) -> None:
        """Block until every task submitted so far has run (queued ones run here)."""
        self.run_pending()
        with self._lock:
            pending = list(self._futures)
        for future in pending:
            future.result(timeout=timeout)


def _guarded(task: Task) -> None:
    try:
        task()
    except Exception:
        logger.exception("background task %r failed", task)
