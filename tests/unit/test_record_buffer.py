"""The durability rule of evidence written after the answer: every record
reaches S3 within flush_seconds of its answer, or is counted."""

from __future__ import annotations

import threading
import time
from typing import Any

from chalicelib.background import BackgroundWork
from chalicelib.record_buffer import Group, RecordBuffer, read_records


class FakeS3:
    """Keeps what is put; refuses when told to."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.refuse = False
        self.put = threading.Event()

    def put_object(self, **call: Any) -> None:
        if self.refuse:
            raise RuntimeError("AccessDenied")
        self.objects[call["Key"]] = call["Body"]
        self.put.set()

    def records(self) -> list[list[Any]]:
        return [[r["n"] for r in read_records(b)] for b in self.objects.values()]


class Clocks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Counted = list[tuple[str, Group, int]]


def on_lambda() -> tuple[BackgroundWork, FakeS3, Clocks, Counted]:
    """Work deferred as on Lambda, a fake S3, a fake clock, what was counted."""
    return BackgroundWork(deferred=True), FakeS3(), Clocks(), []


def buffer(
    work: BackgroundWork,
    s3: FakeS3,
    clock: Clocks,
    counted: Counted,
    *,
    flush_seconds: float = 60.0,
    flush_records: int = 100,
) -> RecordBuffer[int]:
    return RecordBuffer[int](
        s3,  # type: ignore[arg-type]
        "bucket",
        work,
        group=lambda n: ("m",),
        render=lambda n: {"n": n},
        key=lambda group, at, name: f"{group[0]}/{at}-{name}",
        kind="test",
        on_failure=lambda group, n, error: counted.append(("lost", group, n)),
        on_late=lambda group, n: counted.append(("late", group, n)),
        flush_records=flush_records,
        flush_seconds=flush_seconds,
        wall_clock=clock,
        clock=clock,
    )


def test_on_lambda_a_quiet_containers_record_is_written_after_its_own_invocation() -> (
    None
):
    work, s3, clock, counted = on_lambda()
    records = buffer(work, s3, clock, counted)
    records.add(1, clock.now)
    assert work.run_pending() == 1
    assert s3.records() == [[1]]
    assert counted == []


def test_on_lambda_a_busy_container_batches_until_the_next_record_may_be_too_late() -> (
    None
):
    work, s3, clock, counted = on_lambda()
    records = buffer(work, s3, clock, counted)
    records.add(0, clock.now)
    work.run_pending()  # the first: nothing before it, written at once
    for n in range(1, 27):  # a record every 2 s
        clock.now += 2.0
        records.add(n, clock.now)
        work.run_pending()
    # The buffer's oldest came at 2 s: written when age + 2 * gap reaches 54 s
    # (0.9 of flush_seconds), with the record at 52 s (50 + 4).
    assert s3.records() == [[0], list(range(1, 27))]
    assert records.buffered == 0 and counted == []


def test_a_full_buffer_is_written_at_once() -> None:
    work, s3, clock, counted = on_lambda()
    records = buffer(work, s3, clock, counted, flush_records=3)
    records.add(0, clock.now)
    work.run_pending()
    for n in range(1, 4):
        clock.now += 0.01
        records.add(n, clock.now)
    work.run_pending()
    assert s3.records() == [[0], [1, 2, 3]]


def test_records_written_after_their_deadline_are_counted_late() -> None:
    """A busy container whose traffic stops: its buffer waits, frozen, until the
    next record (or SIGTERM at shutdown) writes it, and says how many were late."""
    work, s3, clock, counted = on_lambda()
    records = buffer(work, s3, clock, counted)
    records.add(0, clock.now)
    work.run_pending()
    clock.now += 1.0
    records.add(1, clock.now)
    work.run_pending()
    assert records.buffered == 1
    clock.now += 300.0  # frozen: no traffic for five minutes
    records.flush()  # SIGTERM at shutdown
    assert s3.records() == [[0], [1]]
    assert counted == [("late", ("m",), 1)]


def test_a_refused_write_is_counted_as_lost() -> None:
    work, s3, clock, counted = on_lambda()
    records = buffer(work, s3, clock, counted)
    s3.refuse = True
    records.add(0, clock.now)
    work.run_pending()
    assert counted == [("lost", ("m",), 1)]


def test_flush_seconds_zero_writes_every_record_after_its_invocation() -> None:
    work, s3, clock, counted = on_lambda()
    records = buffer(work, s3, clock, counted, flush_seconds=0)
    for n in range(3):
        clock.now += 0.001
        records.add(n, clock.now)
        work.run_pending()
    assert s3.records() == [[0], [1], [2]]


def test_off_lambda_a_timer_writes_a_lone_record_within_flush_seconds() -> None:
    work, s3, counted = BackgroundWork(), FakeS3(), list[int]()
    records = RecordBuffer[int](
        s3,  # type: ignore[arg-type]
        "bucket",
        work,
        group=lambda n: ("m",),
        render=lambda n: {"n": n},
        key=lambda group, at, name: name,
        kind="test",
        on_failure=lambda *_: None,
        on_late=lambda group, n: counted.append(n),
        flush_records=100,
        flush_seconds=3.0,
    )
    answered = time.time()
    records.add(7, answered)
    assert s3.put.wait(5.0)
    assert time.time() - answered < 3.0
    assert s3.records() == [[7]] and counted == []
