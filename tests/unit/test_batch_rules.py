"""Batch keys and the claim rules (pure, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import pytest

from chalicelib.batch.keys import BatchKey, is_batch_input, outputs_base, parse_key
from chalicelib.batch.record import JobRecord, job_state, skip_reason
from chalicelib.errors import BatchFileError, BatchKeyError

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
EXPECTED_LAYOUT = (
    "upload to incoming/{model}/{file}, incoming/{model}@{alias}/{file} or "
    "incoming/{model}@{version}/{file}"
)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (
            "incoming/iris/data.csv",
            BatchKey("incoming/iris/data.csv", "iris", None, None, "csv", False),
        ),
        (
            "incoming/iris@canary/2026/05/day one.CSV.gz",
            BatchKey(
                "incoming/iris@canary/2026/05/day one.CSV.gz",
                "iris",
                "canary",
                None,
                "csv",
                True,
            ),
        ),
        (
            "incoming/iris@2/rows.jsonl",
            BatchKey("incoming/iris@2/rows.jsonl", "iris", None, 2, "jsonl", False),
        ),
        (
            "incoming/my-model.v2@prod/x.ndjson.gz",
            BatchKey(
                "incoming/my-model.v2@prod/x.ndjson.gz",
                "my-model.v2",
                "prod",
                None,
                "jsonl",
                True,
            ),
        ),
    ],
)
def test_keys_name_the_model_its_alias_or_version_and_the_format(
    key: str, expected: BatchKey
) -> None:
    assert parse_key(key) == expected


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("incoming/data.csv", "has no model folder"),
        (
            "incoming/Iris/data.csv",
            "has an invalid model folder: invalid model name 'Iris': use lowercase "
            "letters, digits, '-', '_' and '.', starting with a letter or digit",
        ),
        (
            "incoming/iris@0/data.csv",
            "has an invalid model folder: invalid version name '0': a version is a "
            "positive integer",
        ),
        (
            "incoming/iris@/data.csv",
            "has an invalid model folder: invalid alias name '': it is empty",
        ),
    ],
)
def test_keys_without_a_valid_model_folder_are_refused(key: str, problem: str) -> None:
    with pytest.raises(BatchKeyError) as caught:
        parse_key(key)
    assert str(caught.value) == f"key {key!r} {problem}: {EXPECTED_LAYOUT}"


@pytest.mark.parametrize(
    ("key", "extension"),
    [
        ("incoming/iris/data.txt", "'.txt'"),
        ("incoming/iris/data", "'without extension'"),
    ],
)
def test_unknown_formats_are_refused(key: str, extension: str) -> None:
    with pytest.raises(BatchFileError) as caught:
        parse_key(key)
    assert str(caught.value) == (
        f"unknown format {extension}: name the file .csv, .jsonl or .ndjson, "
        "optionally followed by .gz"
    )


def test_outputs_mirror_the_input_path_under_outgoing() -> None:
    assert outputs_base("incoming/iris@2/a/b c.csv") == "outgoing/iris@2/a/b c.csv"
    assert is_batch_input("incoming/iris/a.csv")
    assert not is_batch_input("incoming/iris/folder/")
    assert not is_batch_input("outgoing/iris/a.csv.out")


def manifest(status: str, etag: str = '"abc"', **extra: Any) -> JobRecord:
    """A job record with what the rules read (a claim may lack its run_id)."""
    return cast(JobRecord, {"status": status, "input": {"etag": etag}, **extra})


@pytest.mark.parametrize(
    ("existing", "reason"),
    [
        (None, None),
        (manifest("succeeded", etag='"other"'), None),
        (manifest("running", etag='"other"'), None),
        (manifest("succeeded"), "already succeeded"),
        (manifest("partial"), "already partial"),
        (
            manifest("failed", retryable=False),
            "already failed, for a reason a retry would not change",
        ),
        (manifest("failed", retryable=True), None),
        (
            manifest("running", claim={"expires_at": "2026-01-01T12:00:01.000Z"}),
            "another delivery is processing it (until 2026-01-01T12:00:01.000Z)",
        ),
        (manifest("running", claim={"expires_at": "2026-01-01T11:59:59.000Z"}), None),
    ],
)
def test_a_delivery_runs_unless_its_object_is_done_or_claimed(
    existing: JobRecord | None, reason: str | None
) -> None:
    assert skip_reason(existing, '"abc"', NOW) == reason


@pytest.mark.parametrize(
    ("document", "state"),
    [
        (manifest("succeeded"), "succeeded"),
        (manifest("failed", retryable=True), "failed"),
        (
            manifest("running", claim={"expires_at": "2026-01-01T12:00:01.000Z"}),
            "running",
        ),
        (manifest("running", claim={"expires_at": "2026-01-01T12:00:00.000Z"}), "dead"),
        (manifest("running"), "dead"),
    ],
)
def test_a_running_job_whose_claim_expired_is_dead(
    document: JobRecord, state: str
) -> None:
    assert job_state(document, NOW) == state
