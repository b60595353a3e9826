"""Ground truth: labels for answered requests, checked and filed in the capture
bucket, for the report to join to the version that answered (docs/evidence.md).

Two ways in, one format out. ``POST /models/{name}/feedback`` takes
``{"feedback": [{"id": ..., "label": ...}, ...]}`` (``Feedback.accept``); a
labels file (CSV or JSON Lines with ``id`` and ``label`` columns) uploaded under
``feedback/{model}/`` in the batch bucket is read row by row
(``file_labels_upload``). An ``id`` is the X-Request-Id Turnout answered with or
the caller's own id (V2's ``id``, ``X-Inference-Id``); a batch output row is
``{input key}#{row}``. A label is recorded as given: a value, or a list of
values (one per row of the request), nested at most ``MAX_LABEL_DEPTH`` deep.

Objects: ``feedback/{model}/{yyyy}/{mm}/{dd}/{hh}/{time}-{id}.jsonl.gz``, the
hour (UTC) the batch's first label arrived; one line per label:
``{"id", "label", "received_at", "source"}`` (``source`` "rest" or "batch").
REST labels go through the capture's buffer and its durability rule
(``chalicelib.record_buffer``); a labels file's are written before its
invocation ends.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from chalicelib.background import BackgroundWork
from chalicelib.config import FEEDBACK_PREFIX
from chalicelib.errors import InvalidInputError, TurnoutError
from chalicelib.names import validate_model_name
from chalicelib.protocols.common import parse_json
from chalicelib.record_buffer import Group, RecordBuffer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REST, BATCH = "rest", "batch"
# Hostile input costs at most this much: the body's size is the REST limit.
MAX_ENTRIES = 100_000
MAX_ID_CHARS = 256
MAX_LABEL_CHARS = 256
MAX_LABEL_DEPTH = 2
MAX_LABEL_VALUES = 100_000
# Labels of a file written per object.
FILE_LABELS_PER_OBJECT = 50_000
# What a labels file's errors report keeps of a bad row.
MAX_RAW_CHARS = 1_000
ENTRY_FIELDS = ("id", "label")


@dataclass(slots=True, frozen=True)
class Label:
    """One label as filed: for the request ``id`` of ``model``, arrived at
    ``received_at`` (seconds since the epoch) from ``source``."""

    model: str
    id: str
    label: Any
    received_at: float
    source: str


def feedback_key(model: str, at: float, name: str) -> str:
    """Where a batch of labels whose first arrived at ``at`` is written."""
    moment = datetime.fromtimestamp(at, UTC)
    return (
        f"{FEEDBACK_PREFIX}{model}/{moment:%Y/%m/%d/%H}/"
        f"{moment:%Y%m%dT%H%M%S}-{name}.jsonl.gz"
    )


def feedback_record(label: Label) -> dict[str, Any]:
    """The JSON object one label becomes."""
    return {
        "id": label.id,
        "label": label.label,
        "received_at": datetime.fromtimestamp(label.received_at, UTC).isoformat(
            timespec="milliseconds"
        ),
        "source": label.source,
    }


# -- checks (pure) ------------------------------------------------------------------


def check_id(value: object, field: str) -> str:
    """A request id as labels name it; InvalidInputError naming ``field``."""
    if value is None:
        raise InvalidInputError(field, "missing")
    if not isinstance(value, str):
        raise InvalidInputError(field, "expected a string")
    if not value:
        raise InvalidInputError(field, "empty")
    if len(value) > MAX_ID_CHARS:
        raise InvalidInputError(
            field, f"{len(value)} characters, at most {MAX_ID_CHARS}"
        )
    return value


def check_label(value: object, field: str) -> Any:
    """A label: a string, number or boolean, or a list of them (one per row),
    nested at most MAX_LABEL_DEPTH deep, with at most MAX_LABEL_VALUES values;
    InvalidInputError naming ``field``."""
    values = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, list):
            if depth == MAX_LABEL_DEPTH:
                raise InvalidInputError(
                    field, f"nested more than {MAX_LABEL_DEPTH} lists deep"
                )
            if not item:
                raise InvalidInputError(field, "an empty list")
            stack.extend((member, depth + 1) for member in item)
            continue
        values += 1
        if values > MAX_LABEL_VALUES:
            raise InvalidInputError(field, f"more than {MAX_LABEL_VALUES} values")
        if isinstance(item, str):
            if len(item) > MAX_LABEL_CHARS:
                raise InvalidInputError(
                    field, f"a string of {len(item)} characters, at most "
                    f"{MAX_LABEL_CHARS}"
                )  # fmt: skip
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidInputError(field, f"{item} is not a finite number")
        elif not isinstance(item, bool | int):
            kind = "null" if item is None else type(item).__name__
            raise InvalidInputError(
                field, f"{kind}, expected a string, number or boolean, or a list"
            )
    return value


def read_feedback(body: bytes) -> list[tuple[str, Any]]:
    """The (id, label) entries of a feedback request body, all checked: the
    first malformed one is an InvalidInputError naming its index and field."""
    document = parse_json(body)
    if not isinstance(document, dict):
        raise InvalidInputError("body", 'expected an object {"feedback": [...]}')
    unknown = sorted(set(document) - {"feedback"})
    if unknown:
        raise InvalidInputError(unknown[0], "unknown field")
    entries = document.get("feedback")
    if entries is None:
        raise InvalidInputError("feedback", "missing")
    if not isinstance(entries, list):
        raise InvalidInputError("feedback", "expected a list of {id, label} objects")
    if not entries:
        raise InvalidInputError("feedback", "empty; send at least one entry")
    if len(entries) > MAX_ENTRIES:
        raise InvalidInputError(
            "feedback", f"{len(entries)} entries, at most {MAX_ENTRIES}"
        )
    checked = []
    for index, entry in enumerate(entries):
        at = f"feedback[{index}]"
        if not isinstance(entry, dict):
            raise InvalidInputError(at, "expected an object with id and label")
        unknown = sorted(set(entry) - set(ENTRY_FIELDS))
        if unknown:
            raise InvalidInputError(f"{at}.{unknown[0]}", "unknown field")
        identifier = check_id(entry.get("id"), f"{at}.id")
        if "label" not in entry:
            raise InvalidInputError(f"{at}.label", "missing")
        checked.append((identifier, check_label(entry["label"], f"{at}.label")))
    return checked


# -- the REST side ------------------------------------------------------------------


def _group(label: Label) -> Group:
    return (label.model,)


def _key(group: Group, at: float, name: str) -> str:
    return feedback_key(group[0], at, name)


class Feedback:
    """Labels accepted over REST, written after the answer through a buffer with
    the capture's durability rule. ``on_failure(model, records, error)`` counts a
    refused write, ``on_late(model, records)`` labels written after
    ``flush_seconds``."""

    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        work: BackgroundWork,
        *,
        on_failure: Callable[[str, int, str], None],
        on_late: Callable[[str, int], None],
        flush_records: int = 100,
        flush_seconds: float = 60.0,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._wall_clock = wall_clock
        self._buffer = label_buffer(
            s3,
            bucket,
            work,
            on_failure=on_failure,
            on_late=on_late,
            flush_records=flush_records,
            flush_seconds=flush_seconds,
            wall_clock=wall_clock,
            clock=clock,
        )

    def accept(self, model: str, body: bytes) -> int:
        """Check every entry of ``body`` and keep them all, or none (the first
        malformed entry is an InvalidInputError); how many were accepted."""
        validate_model_name(model)
        entries = read_feedback(body)
        at = self._wall_clock()
        for identifier, label in entries:
            self._buffer.add(Label(model, identifier, label, at, REST), at)
        return len(entries)

    @property
    def buffered(self) -> int:
        """How many labels wait for the next write."""
        return self._buffer.buffered

    def flush(self) -> None:
        """Write every buffered label now."""
        self._buffer.flush()


def label_buffer(
    s3: S3Client,
    bucket: str,
    work: BackgroundWork,
    *,
    on_failure: Callable[[str, int, str], None],
    on_late: Callable[[str, int], None],
    flush_records: int,
    flush_seconds: float,
    wall_clock: Callable[[], float] = time.time,
    clock: Callable[[], float] = time.monotonic,
) -> RecordBuffer[Label]:
    """The buffer and writer of labels, REST or batch."""
    return RecordBuffer[Label](
        s3,
        bucket,
        work,
        group=_group,
        render=feedback_record,
        key=_key,
        kind="feedback",
        on_failure=lambda group, records, error: on_failure(group[0], records, error),
        on_late=lambda group, records: on_late(group[0], records),
        flush_records=flush_records,
        flush_seconds=flush_seconds,
        wall_clock=wall_clock,
        clock=clock,
    )


# -- labels files ----------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class RejectedRow:
    """A row of a labels file that was not filed, and why."""

    row: int
    line: int
    raw: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "line": self.line,
            "raw": self.raw[:MAX_RAW_CHARS],
            "reason": self.reason,
        }


def labels_file_model(key: str) -> str:
    """The model a labels file under ``feedback/{model}/`` labels;
    InvalidNameError or InvalidInputError when the key names none."""
    folder, slash, path = key.removeprefix(FEEDBACK_PREFIX).partition("/")
    if not slash or not path:
        raise InvalidInputError("key", f"{key!r} has no model folder")
    return validate_model_name(folder)


def read_labels(
    lines: Iterable[str], fmt: str
) -> Iterator[tuple[str, Any] | RejectedRow]:
    """Each row of a labels file (``fmt`` "csv" or "jsonl"): its (id, label), or
    the RejectedRow saying why not. A CSV cell reads as JSON when it parses (``1``,
    ``[0, 2]``), else as the text it is."""
    if fmt == "csv":
        yield from _csv_labels(lines)
    else:
        yield from _jsonl_labels(lines)


def _jsonl_labels(lines: Iterable[str]) -> Iterator[tuple[str, Any] | RejectedRow]:
    row = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row += 1
        try:
            document = parse_json(line.encode())
            if not isinstance(document, dict):
                raise InvalidInputError("row", "expected an object with id and label")
            if "label" not in document:
                raise InvalidInputError("label", "missing")
            yield (
                check_id(document.get("id"), "id"),
                check_label(document["label"], "label"),
            )
        except InvalidInputError as error:
            # A line that is not JSON: the problem is the row's, not a body's.
            reason = error.problem if error.field == "body" else str(error)
            yield RejectedRow(row, number, line.rstrip("\r\n"), reason)


def _csv_labels(lines: Iterable[str]) -> Iterator[tuple[str, Any] | RejectedRow]:
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None or not {"id", "label"} <= {name.strip() for name in header}:
        yield RejectedRow(0, 1, ",".join(header or []), "the header has no id, label")
        return
    names = [name.strip() for name in header]
    id_at, label_at = names.index("id"), names.index("label")
    for row, cells in enumerate(reader, start=1):
        if not cells:
            continue
        line = reader.line_num
        raw = ",".join(cells)
        if len(cells) != len(names):
            reason = f"{len(cells)} fields, the header has {len(names)}"
            yield RejectedRow(row, line, raw, reason)
            continue
        try:
            yield (
                check_id(cells[id_at], "id"),
                check_label(_cell(cells[label_at]), "label"),
            )
        except InvalidInputError as error:
            yield RejectedRow(row, line, raw, str(error))


def _cell(text: str) -> Any:
    if not text:
        raise InvalidInputError("label", "missing")
    try:
        return json.loads(text)
    except ValueError:
        return text


def file_labels_upload(
    batch_s3: S3Client,
    batch_bucket: str,
    key: str,
    buffer: RecordBuffer[Label],
    *,
    wall_clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """Read the labels file at ``key`` in the batch bucket, file its good rows
    through ``buffer`` (written before this returns) and report the bad ones in
    ``outgoing/{key}.errors.jsonl``; a summary of what was done."""
    errors_key = "outgoing/" + key + ".errors.jsonl"
    name = key.rsplit("/", 1)[-1].lower()
    fmt = "csv" if name.endswith(".csv") else "jsonl"
    rejected: list[RejectedRow] = []
    filed = 0
    try:
        model = labels_file_model(key)
        if not name.endswith((".csv", ".jsonl", ".ndjson")):
            raise InvalidInputError("key", "a labels file ends in .csv or .jsonl")
    except TurnoutError as error:
        rejected.append(RejectedRow(0, 0, key, str(error)))
    else:
        body = batch_s3.get_object(Bucket=batch_bucket, Key=key)["Body"]
        lines = (
            line.decode("utf-8", errors="replace")
            for line in body.iter_lines(keepends=True)
        )
        at = wall_clock()
        chunk: list[tuple[Label, float]] = []
        for entry in read_labels(lines, fmt):
            if isinstance(entry, RejectedRow):
                rejected.append(entry)
                continue
            chunk.append((Label(model, entry[0], entry[1], at, BATCH), at))
            if len(chunk) == FILE_LABELS_PER_OBJECT:
                filed += len(chunk)
                buffer.write(chunk)
                chunk = []
        filed += len(chunk)
        buffer.write(chunk)
    if rejected:
        report = "".join(json.dumps(r.to_dict()) + "\n" for r in rejected)
        batch_s3.put_object(
            Bucket=batch_bucket,
            Key=errors_key,
            Body=report.encode(),
            ContentType="application/x-ndjson",
        )
    return {
        "action": "labels filed",
        "key": key,
        "labels": filed,
        "rejected": len(rejected),
        "errors": errors_key if rejected else None,
    }
