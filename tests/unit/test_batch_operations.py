"""Batch keys both ways, upload names and failure causes (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chalicelib.batch import keys
from chalicelib.batch.operations import (
    PERMANENT,
    RETRYABLE,
    UNKNOWN_ALIAS,
    UNKNOWN_MODEL,
    UNKNOWN_VERSION,
    failure_cause,
    upload_name,
)
from chalicelib.batch.record import JobRecord
from chalicelib.errors import BatchKeyError

SHA = "0123456789abcdef" * 4


def test_an_input_key_gives_its_outputs_and_its_job_record_and_back() -> None:
    key = "incoming/iris@2/a/b c.csv"
    assert keys.record_key(key) == "outgoing/iris@2/a/b c.csv.manifest.json"
    assert keys.out_key(key) == "outgoing/iris@2/a/b c.csv.out"
    assert keys.errors_key(key) == "outgoing/iris@2/a/b c.csv.errors.jsonl"
    assert keys.input_key(keys.record_key(key)) == key
    assert keys.is_record_key(keys.record_key(key))
    assert not keys.is_record_key(keys.out_key(key))
    with pytest.raises(ValueError, match="is not a job record key"):
        keys.input_key(keys.out_key(key))


@pytest.mark.parametrize("key", ["iris/iris.csv", "outgoing/iris/a.csv", ""])
def test_a_key_outside_incoming_has_no_outputs(key: str) -> None:
    with pytest.raises(BatchKeyError) as caught:
        keys.record_key(key)
    assert str(caught.value) == (
        f"key {key!r} is not under incoming/: upload to incoming/{{model}}/{{file}}, "
        "incoming/{model}@{alias}/{file} or incoming/{model}@{version}/{file}"
    )


@pytest.mark.parametrize(
    ("name", "uploaded"),
    [
        ("data.csv", "data-0123456789ab.csv"),
        ("data.csv.gz", "data-0123456789ab.csv.gz"),
        ("day one.v2.jsonl", "day one.v2-0123456789ab.jsonl"),
        ("noextension", "noextension-0123456789ab"),
        (".csv", ".csv-0123456789ab"),
    ],
)
def test_an_upload_is_named_after_the_file_and_its_content(
    name: str, uploaded: str
) -> None:
    assert upload_name(Path("/tmp") / name, SHA) == uploaded


def failed(error: str, **fields: object) -> JobRecord:
    record: dict[str, object] = {
        "status": "failed",
        "model": "irs",
        "alias": "prod",
        "version": None,
        "error": error,
        "retryable": True,
    }
    record.update(fields)
    return record  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("record", "cause"),
    [
        (failed("model 'irs' not found"), UNKNOWN_MODEL),
        (failed("model 'irs' has no alias 'prod'"), UNKNOWN_ALIAS),
        (
            failed("model 'irs' has no version 7", alias=None, version=7),
            UNKNOWN_VERSION,
        ),
        (failed("internal error in run r1: see the function's log"), RETRYABLE),
        (failed("the file is empty", retryable=False), PERMANENT),
        (failed("model 'other' not found"), RETRYABLE),
    ],
)
def test_a_failure_is_told_by_its_cause(record: JobRecord, cause: str) -> None:
    assert failure_cause(record) == cause
