"""Work after the answer: queued on Lambda, on a thread elsewhere; never raised."""

from __future__ import annotations

import threading

import pytest

from chalicelib import extension
from chalicelib.background import BackgroundWork


def test_deferred_work_waits_for_run_pending_and_runs_what_it_queues() -> None:
    work = BackgroundWork(deferred=True)
    ran: list[str] = []

    def shadow() -> None:
        ran.append("shadow")
        work.submit(lambda: ran.append("more"))

    work.submit(shadow)
    work.submit(lambda: ran.append("capture"))
    assert ran == []
    assert work.run_pending() == 3
    assert ran == ["shadow", "capture", "more"]
    assert work.run_pending() == 0


def test_work_off_lambda_runs_on_another_thread() -> None:
    work = BackgroundWork()
    threads: list[str] = []
    work.submit(lambda: threads.append(threading.current_thread().name))
    work.wait()
    assert len(threads) == 1 and threads[0].startswith("turnout-after")


def test_a_failing_task_is_logged_and_the_rest_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    work = BackgroundWork(deferred=True)
    ran: list[int] = []

    def broken() -> None:
        raise OSError("disk full")

    work.submit(broken)
    work.submit(lambda: ran.append(1))
    assert work.run_pending() == 2
    assert ran == [1]
    (record,) = [r for r in caplog.records if r.name == "turnout.background"]
    assert "failed" in record.getMessage() and record.exc_info is not None


def test_the_extension_registers_only_on_lambda() -> None:
    assert extension.register_at_init(lambda: None, env={}) is None
    assert not extension.active()


def test_the_middleware_passes_the_response_and_errors_through() -> None:
    assert extension.after_each_invocation({"a": 1}, lambda event: event["a"]) == 1
    with pytest.raises(KeyError):
        extension.after_each_invocation({}, lambda event: event["a"])
