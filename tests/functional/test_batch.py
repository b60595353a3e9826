"""Batch predictions through the app's S3 handler (``client.lambda_.invoke`` with
generated S3 events), against moto; predictions checked against onnxruntime."""

from __future__ import annotations

import gzip
import json
import logging
import re
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

import chalice.test
import moto.s3.models
import numpy as np
import pytest
from chalice.local import LambdaContext
from click.testing import CliRunner, Result

from chalicelib.batch import keys, record
from chalicelib.clock import iso_timestamp, utc_now
from chalicelib.predictor import Predictor
from chalicelib.traffic import choose_version
from tests.demo_support import BATCH_BUCKET
from tests.emf_support import emf_lines
from tests.functional.batch_support import (
    HEADER,
    LABELS,
    PREDICTION_COLUMNS,
    Batch,
    count_runs,
    csv_text,
    expected_csv,
    function_environment,
    iris_cells,
    iris_rows,
    process,
    session,
)
from turnout.cli import main as cli_module
from turnout.cli.main import cli

if TYPE_CHECKING:
    pass


# -- formats and keys ------------------------------------------------------------


def test_a_csv_file_is_predicted_row_by_row_with_its_columns_passed_through(
    batch_app: Batch,
) -> None:
    rows = iris_rows(500)
    key = "incoming/iris@1/scores.csv"
    etag = batch_app.upload(key, csv_text(rows))
    payload = batch_app.deliver(key)

    assert batch_app.output(key) == expected_csv(1, rows)
    manifest = batch_app.manifest(key)
    assert payload == {"action": "processed", "manifest": manifest}
    assert manifest["status"] == "succeeded"
    assert (manifest["model"], manifest["alias"], manifest["version"]) == (
        "iris",
        None,
        1,
    )
    assert manifest["rows"] == {"read": 500, "predicted": 500, "rejected": 0}
    assert manifest["input"] == {
        "bucket": BATCH_BUCKET,
        "key": key,
        "etag": etag,
        "size": len(csv_text(rows)),
        "format": "csv",
        "compression": None,
    }
    assert manifest["output"] == {
        "key": "outgoing/iris@1/scores.csv.out",
        "size": len(expected_csv(1, rows)),
        "format": "csv",
        "compression": None,
        "columns": PREDICTION_COLUMNS,
    }
    assert manifest["errors"] is None and "error" not in manifest
    assert manifest["started_at"] <= manifest["finished_at"]
    assert batch_app.stored() == {
        key,
        "outgoing/iris@1/scores.csv.out",
        "outgoing/iris@1/scores.csv.manifest.json",
    }
    # The input is never modified.
    assert batch_app.head(key)["ETag"] == etag
    assert batch_app.read(key) == csv_text(rows).encode()


def test_columns_named_after_the_input_are_found_wherever_they_are(
    batch_app: Batch,
) -> None:
    rows = iris_rows(3)
    header = "id,float_input_0,note,float_input_1,float_input_2,float_input_3"
    body = (
        header
        + "\n"
        + "".join(f"{i},{a},n{i},{b},{c},{d}\n" for i, (a, b, c, d) in enumerate(rows))
    )
    batch_app.run("incoming/iris@2/named.csv", body)
    expected = [
        f"{i},{a},n{i},{b},{c},{d}," + ",".join(cells)
        for i, ((a, b, c, d), cells) in enumerate(
            zip(rows, iris_cells(2, rows), strict=True)
        )
    ]
    lines = batch_app.output("incoming/iris@2/named.csv").splitlines()
    assert lines == [header + "," + ",".join(PREDICTION_COLUMNS), *expected]


def test_the_default_alias_routes_the_whole_file_by_its_key(batch_app: Batch) -> None:
    rows = iris_rows(50)
    keys = [f"incoming/iris/day-{day}.csv" for day in range(8)]
    for key in keys:
        manifest = batch_app.run(key, csv_text(rows))
        version = choose_version({1: 90, 2: 10}, key, draw=lambda: 0.0)
        assert (manifest["alias"], manifest["version"]) == ("prod", version)
        assert batch_app.output(key) == expected_csv(version, rows)


def test_an_alias_in_the_folder_name_picks_the_routing(batch_app: Batch) -> None:
    manifest = batch_app.run("incoming/iris@prod/a.csv", csv_text(iris_rows(5)))
    assert manifest["alias"] == "prod" and manifest["version"] in (1, 2)
    assert manifest["status"] == "succeeded"


def test_url_encoded_keys_with_spaces_and_sub_folders_keep_their_path(
    batch_app: Batch,
) -> None:
    rows = iris_rows(10)
    key = "incoming/iris@1/2026/05/day one+two (final).csv"
    assert quote_plus(key, safe="/") == (
        "incoming/iris%401/2026/05/day+one%2Btwo+%28final%29.csv"
    )
    manifest = batch_app.run(key, csv_text(rows))
    assert manifest["status"] == "succeeded"
    assert (
        manifest["output"]["key"]
        == "outgoing/iris@1/2026/05/day one+two (final).csv.out"
    )
    assert batch_app.output(key) == expected_csv(1, rows)


def test_json_lines_rows_are_arrays_or_objects_and_stay_so(batch_app: Batch) -> None:
    rows = iris_rows(4)
    lines = [
        json.dumps(rows[0]),
        json.dumps({"id": "a", "float_input": rows[1]}),
        json.dumps([*rows[2], "extra"]),
        json.dumps(
            {
                "sepal_length": rows[3][0],
                "w": rows[3][1],
                "l": rows[3][2],
                "p": rows[3][3],
            }
        ),
    ]
    key = "incoming/iris@2/rows.jsonl"
    manifest = batch_app.run(key, "\n".join(lines) + "\n")
    cells = iris_cells(2, rows)
    label = [row[0] for row in cells]
    probabilities = [[float(p) for p in row[1:]] for row in cells]
    # Keyed by class in objects, as REST gives them; in order in arrays.
    keyed = [dict(zip(LABELS, row, strict=True)) for row in probabilities]
    out = [json.loads(line) for line in batch_app.output(key).splitlines()]
    assert out == [
        [*rows[0], label[0], *probabilities[0]],
        {
            "id": "a",
            "float_input": rows[1],
            "label": label[1],
            "probabilities": keyed[1],
        },
        [*rows[2], "extra", label[2], *probabilities[2]],
        {
            "sepal_length": rows[3][0],
            "w": rows[3][1],
            "l": rows[3][2],
            "p": rows[3][3],
            "label": label[3],
            "probabilities": keyed[3],
        },
    ]
    assert manifest["output"]["columns"] == ["label", "probabilities"]
    assert manifest["input"]["format"] == "jsonl"


@pytest.mark.parametrize("name", ["rows.csv.gz", "rows.ndjson.gz"])
def test_gzip_files_are_read_and_written_compressed(
    batch_app: Batch, name: str
) -> None:
    rows = iris_rows(300)
    if name.startswith("rows.csv"):
        text, expected = csv_text(rows), expected_csv(1, rows)
    else:
        text = "".join(json.dumps(row) + "\n" for row in rows)
        expected = "".join(
            json.dumps([*row, cells[0], *map(float, cells[1:])]) + "\n"
            for row, cells in zip(rows, iris_cells(1, rows), strict=True)
        )
    # Two gzip members, as `cat a.gz b.gz` makes.
    half = len(text) // 2
    cut = text.index("\n", half) + 1
    body = gzip.compress(text[:cut].encode()) + gzip.compress(text[cut:].encode())
    key = f"incoming/iris@1/{name}"
    manifest = batch_app.run(key, body)
    assert manifest["status"] == "succeeded", manifest
    assert manifest["input"]["compression"] == "gzip"
    assert manifest["output"]["compression"] == "gzip"
    output = batch_app.output(key)
    if name.startswith("rows.csv"):
        assert output == expected
    else:
        assert [json.loads(line) for line in output.splitlines()] == [
            json.loads(line) for line in expected.splitlines()
        ]


def test_a_regression_model_writes_its_output_column(batch_app: Batch) -> None:
    rng = np.random.default_rng(3)
    rows = rng.normal(0, 0.05, size=(20, 10)).round(4).tolist()
    header = ",".join(f"x{i}" for i in range(10)) + ",patient"
    body = (
        header
        + "\n"
        + "".join(",".join(map(str, row)) + f",p{i}\n" for i, row in enumerate(rows))
    )
    key = "incoming/diabetes/patients.csv"
    manifest = batch_app.run(key, body)
    (values,) = session("diabetes.onnx").run(
        None, {"float_input": np.array(rows, np.float32)}
    )
    lines = batch_app.output(key).splitlines()
    assert lines[0] == header + ",variable"
    assert lines[1:] == [
        ",".join(map(str, row)) + f",p{i},{float(value[0]):.6f}"
        for i, (row, value) in enumerate(zip(rows, values, strict=True))
    ]
    assert (manifest["alias"], manifest["version"]) == ("prod", 1)


def test_a_header_without_rows_succeeds_with_an_empty_table(batch_app: Batch) -> None:
    manifest = batch_app.run("incoming/iris@1/empty.csv", HEADER + "\n")
    assert manifest["status"] == "succeeded"
    assert manifest["rows"] == {"read": 0, "predicted": 0, "rejected": 0}
    assert batch_app.output("incoming/iris@1/empty.csv") == (
        ",".join([HEADER, *PREDICTION_COLUMNS]) + "\n"
    )


# -- bad rows and bad files --------------------------------------------------------


def test_bad_rows_are_rejected_with_reasons_while_the_others_are_predicted(
    batch_app: Batch,
) -> None:
    rows = iris_rows(6)
    lines = csv_text(rows).splitlines()
    lines[2] = "5.1,abc,1.4,0.2,bad-1"
    lines[4] = "5.1,3.5,1.4"
    lines[5] = "5.1,3.5,nan,0.2,bad-3"
    key = "incoming/iris@1/mixed.csv"
    manifest = batch_app.run(key, "\n".join(lines) + "\n")

    good = [rows[0], rows[2], rows[5]]
    cells = iris_cells(1, good)
    assert batch_app.output(key).splitlines()[1:] == [
        lines[1] + "," + ",".join(cells[0]),
        lines[3] + "," + ",".join(cells[1]),
        lines[6] + "," + ",".join(cells[2]),
    ]
    assert manifest["status"] == "partial"
    assert manifest["rows"] == {"read": 6, "predicted": 3, "rejected": 3}
    assert batch_app.errors(key) == [
        {
            "row": 2,
            "line": 3,
            "raw": "5.1,abc,1.4,0.2,bad-1",
            "reason": (
                "column 'sepal_width' is 'abc', not a number, model expects FP32"
            ),
        },
        {
            "row": 4,
            "line": 5,
            "raw": "5.1,3.5,1.4",
            "reason": "the row has 3 fields, the header has 5",
        },
        {
            "row": 5,
            "line": 6,
            "raw": "5.1,3.5,nan,0.2,bad-3",
            "reason": (
                "column 'petal_length' is 'nan', not a finite number; this model "
                "does not take NaN or Infinity"
            ),
        },
    ]
    assert manifest["errors"] == {
        "key": "outgoing/iris@1/mixed.csv.errors.jsonl",
        "rows": 3,
        "size": len(batch_app.read("outgoing/iris@1/mixed.csv.errors.jsonl")),
    }


def test_a_file_whose_rows_are_all_rejected_fails_with_its_report(
    batch_app: Batch,
) -> None:
    key = "incoming/iris@1/bad.jsonl"
    manifest = batch_app.run(key, '{"x": 1}\n[1, 2]\n')
    assert manifest["status"] == "failed"
    assert manifest["error"] == "all 2 rows were rejected: see the errors report"
    assert manifest["retryable"] is False
    assert [item["reason"] for item in batch_app.errors(key)] == [
        "missing key 'float_input' (or give the model's 4 values by position; "
        "the object has 1)",
        "the array has 2 values, the model takes 4",
    ]
    assert batch_app.base(key) + ".out" not in batch_app.stored()


def gzipped(text: str) -> bytes:
    return gzip.compress(text.encode())


@pytest.mark.parametrize(
    ("key", "body", "error", "retryable"),
    [
        ("incoming/nosuch/a.csv", HEADER + "\n", "model 'nosuch' not found", True),
        ("incoming/iris@7/a.csv", HEADER + "\n", "model 'iris' has no version 7", True),
        (
            "incoming/iris@beta/a.csv",
            HEADER + "\n",
            "model 'iris' has no alias 'beta'",
            True,
        ),
        (
            "incoming/iris/a.parquet",
            "x",
            "unknown format '.parquet': name the file .csv, .jsonl or .ndjson, "
            "optionally followed by .gz",
            False,
        ),
        (
            "incoming/a.csv",
            "x",
            "key 'incoming/a.csv' has no model folder: upload to "
            "incoming/{model}/{file}, incoming/{model}@{alias}/{file} or "
            "incoming/{model}@{version}/{file}",
            False,
        ),
        (
            "incoming/iris@1/latin1.csv",
            (HEADER + "\n1,2,3,4,caf\xe9\n").encode("latin-1"),
            "the file is not UTF-8: byte 0xe9 on line 2 is not valid UTF-8",
            False,
        ),
        (
            "incoming/iris@1/packed.csv",
            gzipped(HEADER + "\n1,2,3,4,a\n"),
            "the file is not UTF-8: byte 0x8b on line 1 is not valid UTF-8 "
            "(it looks gzip-compressed: name it .gz)",
            False,
        ),
        (
            "incoming/iris@1/plain.csv.gz",
            HEADER + "\n",
            "not a valid gzip file: Error -3 while decompressing data: incorrect "
            "header check",
            False,
        ),
        (
            "incoming/iris@1/cut.csv.gz",
            gzipped(HEADER + "\n1,2,3,4,a\n" * 50)[:-12],
            "the gzip stream is truncated",
            False,
        ),
        (
            "incoming/iris@1/wide.csv",
            ",".join(f"c{i}" for i in range(70_000)) + "\n1\n",
            "the header has more than 65536 columns",
            False,
        ),
        (
            "incoming/iris@1/nothing.csv",
            b"",
            "the file is empty: a CSV file starts with a header line",
            False,
        ),
        (
            "incoming/iris@1/narrow.csv",
            "a,b\n1,2\n",
            "no column is named after the model's inputs (expected float_input_0, "
            "float_input_1, float_input_2, float_input_3) and the header has 2 "
            "columns, fewer than the 4 the model takes by position",
            False,
        ),
    ],
)
def test_a_file_that_cannot_be_processed_gets_a_failed_manifest_saying_why(
    batch_app: Batch, key: str, body: bytes | str, error: str, retryable: bool
) -> None:
    etag = batch_app.upload(key, body)
    batch_app.deliver(key)
    manifest = batch_app.manifest(key)
    assert manifest["status"] == "failed"
    assert manifest["error"] == error
    assert manifest["retryable"] is retryable
    assert manifest["input"]["etag"] == etag
    assert manifest["output"] is None and manifest["errors"] is None
    assert batch_app.stored() == {key, keys.record_key(key)}
    assert batch_app.uploads_in_progress() == []


def test_keys_outside_incoming_and_folder_markers_are_ignored(batch_app: Batch) -> None:
    batch_app.upload("incoming/iris/", b"")
    assert batch_app.deliver("incoming/iris/") is None
    assert batch_app.deliver("incoming/iris/never-uploaded.csv") is None
    assert batch_app.stored() == {"incoming/iris/"}


# -- idempotency and ordering --------------------------------------------------------


def test_a_second_event_for_the_same_object_recomputes_and_duplicates_nothing(
    batch_app: Batch, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "incoming/iris@1/twice.csv"
    batch_app.run(key, csv_text(iris_rows(20)))
    before = {k: batch_app.head(k) for k in batch_app.stored()}
    runs = count_runs(monkeypatch)

    payload = batch_app.deliver(key)

    assert payload["action"] == "skipped" and payload["reason"] == "already succeeded"
    assert runs == []
    after = {k: batch_app.head(k) for k in batch_app.stored()}
    assert {k: (v["ETag"], v["LastModified"]) for k, v in after.items()} == {
        k: (v["ETag"], v["LastModified"]) for k, v in before.items()
    }


def test_a_new_upload_to_the_same_key_is_processed_afresh(batch_app: Batch) -> None:
    key = "incoming/iris@1/daily.csv"
    first = csv_text(iris_rows(10, seed=1)).replace("\n1.", "\nx.", 1)
    assert batch_app.run(key, first)["status"] == "partial"
    rows = iris_rows(12, seed=2)
    etag = batch_app.upload(key, csv_text(rows))

    manifest = batch_app.manifest(key)
    assert manifest["input"]["etag"] != etag
    batch_app.deliver(key)

    manifest = batch_app.manifest(key)
    assert manifest["input"]["etag"] == etag and manifest["status"] == "succeeded"
    assert batch_app.output(key) == expected_csv(1, rows)
    # The first upload's error report does not outlive it.
    assert batch_app.base(key) + ".errors.jsonl" not in batch_app.stored()


def test_a_late_event_for_a_replaced_object_changes_nothing(batch_app: Batch) -> None:
    key = "incoming/iris@1/late.csv"
    old, new = iris_rows(5, seed=1), iris_rows(7, seed=2)
    batch_app.upload(key, csv_text(old))
    new_etag = batch_app.upload(key, csv_text(new))
    # The first upload's event arrives after the second upload: the object's
    # ETag when read counts, so it processes the second upload.
    assert batch_app.deliver(key)["action"] == "processed"
    assert batch_app.manifest(key)["input"]["etag"] == new_etag
    assert batch_app.output(key) == expected_csv(1, new)
    # The second upload's own event then finds it done.
    assert batch_app.deliver(key)["action"] == "skipped"
    assert batch_app.output(key) == expected_csv(1, new)


@pytest.fixture
def wired(batch_app: Batch, monkeypatch: pytest.MonkeyPatch) -> Batch:
    """The batch function called directly: the stage's settings in the environment."""
    for name, value in {
        "TURNOUT_MODEL_BUCKET": "turnout-models-dev",
        "TURNOUT_DEFAULT_ALIAS": "prod",
        **function_environment(),
    }.items():
        monkeypatch.setenv(name, value)
    # The container's settings are read on first use: after these.
    return batch_app


def test_concurrent_deliveries_of_one_object_run_it_once(
    wired: Batch, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "incoming/iris@1/racing.csv"
    wired.upload(key, csv_text(iris_rows(30)))
    inside, release = threading.Event(), threading.Event()
    run = Predictor.run

    def slow(self: Predictor, target: Any, inputs: Any, **options: Any) -> Any:
        inside.set()
        assert release.wait(10)
        return run(self, target, inputs, **options)

    monkeypatch.setattr(Predictor, "run", slow)
    results: list[dict[str, Any] | None] = []
    first = threading.Thread(target=lambda: results.append(process(wired, key)))
    first.start()
    assert inside.wait(10)

    second = process(wired, key)
    release.set()
    first.join(10)

    assert second is not None and second["action"] == "skipped"
    assert second["reason"].startswith("another delivery is processing it (until ")
    assert results[0] is not None and results[0]["action"] == "processed"
    assert wired.manifest(key)["status"] == "succeeded"


def test_a_stale_claim_is_taken_over_and_its_abandoned_upload_aborted(
    wired: Batch,
) -> None:
    key = "incoming/iris@1/crashed.csv"
    rows = iris_rows(8)
    etag = wired.upload(key, csv_text(rows))
    base = wired.base(key)
    dead = wired.s3.create_multipart_upload(Bucket=BATCH_BUCKET, Key=base + ".out")
    wired.s3.upload_part(
        Bucket=BATCH_BUCKET,
        Key=base + ".out",
        UploadId=dead["UploadId"],
        PartNumber=1,
        Body=b"half",
    )
    expired = iso_timestamp(utc_now() - timedelta(seconds=1))
    claim = {
        "status": "running",
        "input": {"etag": etag},
        "claim": {"expires_at": expired},
    }
    wired.s3.put_object(
        Bucket=BATCH_BUCKET, Key=keys.record_key(key), Body=json.dumps(claim)
    )

    result = process(wired, key)

    assert result is not None and result["action"] == "processed"
    assert wired.manifest(key)["status"] == "succeeded"
    assert wired.output(key) == expected_csv(1, rows)
    assert wired.uploads_in_progress() == []


def test_a_live_claim_by_another_delivery_is_respected(wired: Batch) -> None:
    key = "incoming/iris@1/claimed.csv"
    etag = wired.upload(key, csv_text(iris_rows(3)))
    later = iso_timestamp(utc_now() + timedelta(minutes=5))
    claim = {
        "status": "running",
        "input": {"etag": etag},
        "claim": {"expires_at": later},
    }
    manifest_key = keys.record_key(key)
    wired.s3.put_object(Bucket=BATCH_BUCKET, Key=manifest_key, Body=json.dumps(claim))

    result = process(wired, key)

    assert result is not None and result["action"] == "skipped"
    assert json.loads(wired.read(manifest_key)) == claim
    assert wired.stored() == {key, manifest_key}


def test_an_object_replaced_between_its_head_and_its_read_is_left_to_its_own_event(
    wired: Batch, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "incoming/iris@1/moving.csv"
    wired.upload(key, csv_text(iris_rows(3)))
    head = wired.s3.head_object

    def stale_head(**request: Any) -> Any:
        response = head(**request)
        if request["Key"] == key:
            wired.upload(key, csv_text(iris_rows(4)))  # lands just after the HEAD
        return response

    monkeypatch.setattr(wired.s3, "head_object", stale_head)
    process(wired, key)

    manifest = wired.manifest(key)
    assert manifest["status"] == "failed" and manifest["retryable"] is True
    assert manifest["error"] == (
        f"{key} was replaced while it was read; the new upload is processed on its "
        "own event"
    )
    monkeypatch.setattr(wired.s3, "head_object", head)
    wired.deliver(key)
    assert wired.manifest(key)["status"] == "succeeded"


# -- failures midway: atomic output ----------------------------------------------------


@pytest.fixture
def small_parts(
    monkeypatch: pytest.MonkeyPatch, settings_changes: dict[str, Any]
) -> None:
    """Many chunks and many output parts out of a small file (moto lowers S3's
    5 MiB minimum part size on request)."""
    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", 1)
    settings_changes.update(
        batch_rows_per_chunk=100, batch_part_bytes=4096, batch_read_bytes=2048
    )


def test_a_multipart_output_predicts_every_row(
    small_parts: None, batch_app: Batch
) -> None:
    rows = iris_rows(2000)
    key = "incoming/iris@2/big.csv"
    manifest = batch_app.run(key, csv_text(rows))
    assert manifest["status"] == "succeeded"
    assert batch_app.output(key) == expected_csv(2, rows)
    parts = int(
        batch_app.head(batch_app.base(key) + ".out")["ETag"].strip('"').split("-")[1]
    )
    assert parts > 10
    gz_key = "incoming/iris@2/big.csv.gz"
    batch_app.run(gz_key, gzipped(csv_text(rows)))
    assert batch_app.output(gz_key) == expected_csv(2, rows)


def test_a_job_that_dies_midway_leaves_no_output_and_no_upload(
    small_parts: None, batch_app: Batch, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "incoming/iris@1/dies.csv"
    rows = iris_rows(2000)
    batch_app.upload(key, csv_text(rows).replace("\n1.", "\nx.", 1))
    runs = count_runs(monkeypatch)
    run = Predictor.run

    def dies(self: Predictor, target: Any, inputs: Any, **options: Any) -> Any:
        if len(runs) == 12:
            raise MemoryError("the function ran out of memory")
        return run(self, target, inputs, **options)

    monkeypatch.setattr(Predictor, "run", dies)
    with pytest.raises(MemoryError):
        batch_app.deliver(key)

    manifest = batch_app.manifest(key)
    assert manifest["status"] == "failed" and manifest["retryable"] is True
    assert manifest["error"] == (
        f"internal error in run {manifest['run_id']}: see the function's log"
    )
    assert batch_app.stored() == {key, keys.record_key(key)}
    assert batch_app.uploads_in_progress() == []
    # Lambda retries the event; the retry may run, and this time it completes.
    monkeypatch.setattr(Predictor, "run", run)
    assert batch_app.deliver(key)["action"] == "processed"
    assert batch_app.manifest(key)["status"] == "partial"


def test_a_file_too_large_for_the_time_left_fails_cleanly(
    small_parts: None, wired: Batch
) -> None:
    key = "incoming/iris@1/huge.csv"
    text = csv_text(iris_rows(3000))
    wired.upload(key, text)
    clock = iter(range(1000, 0, -1))

    result = process(wired, key, seconds_left=lambda: float(next(clock)) - 960)

    assert result is not None
    manifest = wired.manifest(key)
    assert manifest["status"] == "failed" and manifest["retryable"] is False
    error = manifest["error"]
    assert error.startswith(
        "the file did not fit in the function's time limit: stopped after "
    )
    assert " bytes read" in error and error.endswith(
        " rows predicted; split it into smaller files"
    )
    assert 0 < manifest["rows"]["predicted"] < 3000
    assert wired.stored() == {key, keys.record_key(key)}
    assert wired.uploads_in_progress() == []


def test_the_deadline_comes_from_the_lambda_context(
    batch_app: Batch, settings_changes: dict[str, Any]
) -> None:
    # The whole 900 s as the margin: the job stops before reading anything.
    settings_changes.update(batch_safety_seconds=1000.0, batch_safety_fraction=1.0)
    key = "incoming/iris@1/late-in-the-day.csv"
    manifest = batch_app.run(key, csv_text(iris_rows(5)))
    assert manifest["status"] == "failed" and manifest["retryable"] is True
    # 900 s from the context (not chalice.test's 3), less what the invocation
    # spent before the job started (its AWS clients, more on a loaded machine).
    assert re.fullmatch(
        r"the function's time limit came before the file was read: [0-9]+\.[0-9] s "
        r"after the job started with (900\.0|89[0-9]\.[0-9]) s left; retry it, or "
        r"give the function a longer timeout",
        manifest["error"],
    )
    assert batch_app.stored() == {key, keys.record_key(key)}


def test_a_small_file_is_predicted_within_chalice_test_s_three_seconds(
    batch_app: Batch, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The context chalice.test gives every invocation: 3 s, whatever the config.
    monkeypatch.setattr(chalice.test, "LambdaContext", LambdaContext)
    key = "incoming/iris@1/quick.csv"
    rows = iris_rows(5)
    manifest = batch_app.run(key, csv_text(rows))
    assert manifest["status"] == "succeeded"
    assert batch_app.output(key) == expected_csv(1, rows)


def test_empty_gzip_members_count_against_the_time_limit(wired: Batch) -> None:
    key = "incoming/iris@1/hollow.csv.gz"
    rows = iris_rows(3)
    header, data = csv_text(rows).split("\n", 1)
    body = gzipped(header + "\n") + gzip.compress(b"") * 5000 + gzipped(data)
    wired.upload(key, body)
    clock = iter(range(100, -100_000, -1))  # one second less at every look

    process(wired, key, seconds_left=lambda: float(next(clock)))

    manifest = wired.manifest(key)
    assert manifest["status"] == "failed" and manifest["retryable"] is False
    assert re.fullmatch(
        r"the file did not fit in the function's time limit: stopped after [0-9]+ s "
        rf"with {len(body)} of {len(body)} bytes read \(100%\) and 0 rows "
        r"predicted; split it into smaller files",
        manifest["error"],
    )


# -- superseded and lost jobs -----------------------------------------------------


def test_a_job_superseded_between_its_claim_check_and_its_write_cannot_overwrite(
    wired: Batch, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "incoming/iris@1/raced.csv"
    old_rows, new_rows = iris_rows(6, seed=1), iris_rows(4, seed=2)
    wired.upload(key, csv_text(old_rows))
    newer: list[dict[str, Any] | None] = []
    check_held = record.Ledger.check_held

    def pause_after_the_check(ledger: record.Ledger) -> None:
        check_held(ledger)
        if not newer:  # the old job's first check: the new upload lands and runs
            newer.append(None)
            wired.upload(key, csv_text(new_rows))
            newer[0] = process(wired, key)

    monkeypatch.setattr(record.Ledger, "check_held", pause_after_the_check)
    old = process(wired, key)

    assert newer[0] is not None and newer[0]["action"] == "processed"
    assert old == {"action": "superseded", "manifest": None}
    manifest = wired.manifest(key)
    assert manifest["status"] == "succeeded"
    assert manifest["input"]["etag"] == wired.head(key)["ETag"]
    assert wired.output(key) == expected_csv(1, new_rows)
    assert (
        wired.head(wired.base(key) + ".out")["Metadata"]["run-id"]
        == (manifest["run_id"])
    )


def test_a_job_whose_upload_a_newer_job_aborted_ends_quietly_as_superseded(
    small_parts: None,
    wired: Batch,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = "incoming/iris@1/overtaken.csv"
    new_rows = iris_rows(50, seed=3)
    wired.upload(key, csv_text(iris_rows(3000)))
    runs = count_runs(monkeypatch)
    run = Predictor.run
    newer: list[dict[str, Any] | None] = []

    def overtaken(self: Predictor, target: Any, inputs: Any, **options: Any) -> Any:
        if len(runs) == 10 and not newer:  # the old job's output is multipart now
            newer.append(None)
            wired.upload(key, csv_text(new_rows))
            newer[0] = process(wired, key)
        return run(self, target, inputs, **options)

    monkeypatch.setattr(Predictor, "run", overtaken)
    with caplog.at_level(logging.INFO, logger="turnout.batch"):
        old = process(wired, key)

    assert newer[0] is not None and newer[0]["action"] == "processed"
    assert old == {"action": "superseded", "manifest": None}
    assert [r.levelname for r in caplog.records if r.levelno >= logging.WARNING] == []
    superseded = [json.loads(r.message) for r in caplog.records][-1]
    assert superseded["event"] == "batch_superseded"
    assert superseded["by_etag"] == wired.head(key)["ETag"]
    assert wired.manifest(key)["status"] == "succeeded"
    assert wired.output(key) == expected_csv(1, new_rows)
    assert wired.uploads_in_progress() == []


def test_a_job_whose_claim_was_taken_over_writes_nothing_and_says_so(
    wired: Batch, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    key = "incoming/iris@1/slow.csv"
    rows = iris_rows(20)
    wired.upload(key, csv_text(rows))
    run = Predictor.run
    other: list[dict[str, Any] | None] = []

    def stalls(self: Predictor, target: Any, inputs: Any, **options: Any) -> Any:
        if not other:  # a later delivery, once this job's claim has expired
            other.append(None)
            later = utc_now() + timedelta(hours=1)
            other[0] = process(wired, key, clock=lambda: later)
        return run(self, target, inputs, **options)

    monkeypatch.setattr(Predictor, "run", stalls)
    with caplog.at_level(logging.INFO, logger="turnout.batch"):
        result = process(wired, key, seconds_left=lambda: 60.0)

    assert other[0] is not None and other[0]["action"] == "processed"
    assert result == {"action": "lost", "manifest": None}
    lost = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [json.loads(r.message)["event"] for r in lost] == ["batch_claim_lost"]
    manifest = wired.manifest(key)
    assert manifest["status"] == "succeeded"
    assert manifest["run_id"] == other[0]["manifest"]["run_id"]
    assert wired.output(key) == expected_csv(1, rows)
    assert wired.uploads_in_progress() == []


# -- following and re-running jobs: turnout batch status / retry --------------------


@pytest.fixture
def turnout(batch_app: Batch, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``turnout(*args)``: the CLI's batch commands on the moto batch bucket."""
    monkeypatch.setattr(cli_module, "s3_client", lambda endpoint_url: batch_app.s3)

    def run(*args: str) -> Result:
        return CliRunner().invoke(cli, [*args, "--batch-bucket", BATCH_BUCKET])

    return run


def claim_manifest(batch_app: Batch, key: str, etag: str, expires_in: float) -> None:
    """A running job's manifest whose claim expires ``expires_in`` s from now."""
    expires = iso_timestamp(utc_now() + timedelta(seconds=expires_in))
    document = {
        "status": "running",
        "model": "iris",
        "alias": None,
        "version": 1,
        "rows": {"read": 0, "predicted": 0, "rejected": 0},
        "input": {"etag": etag},
        "run_id": "r1",
        "started_at": "2026-01-01T12:00:00.000Z",
        "claim": {"run_id": "r1", "expires_at": expires},
    }
    batch_app.s3.put_object(
        Bucket=BATCH_BUCKET,
        Key=keys.record_key(key),
        Body=json.dumps(document),
    )


def test_a_dead_job_says_so_and_is_retried_without_uploading_again(
    batch_app: Batch, turnout: Any
) -> None:
    key = "incoming/iris@1/killed.csv"
    rows = iris_rows(7)
    etag = batch_app.upload(key, csv_text(rows))
    claim_manifest(batch_app, key, etag, expires_in=-1)
    expires = batch_app.manifest(key)["claim"]["expires_at"]

    status = turnout("batch", "status", key)
    assert (status.exit_code, status.stdout) == (
        5,
        f"{key}: dead\n"
        "  model     iris (1)\n"
        "  rows      0 read, 0 predicted, 0 rejected\n"
        "  run       r1 started 2026-01-01T12:00:00.000Z\n"
        f"  claim     expired at {expires} without a final job record: the "
        "function stopped (out of memory, or killed)\n"
        f"  next      turnout batch retry {key}   (if it dies again, split the file "
        "or give the function more memory)\n",
    )

    retry = turnout("batch", "retry", key)
    assert (retry.exit_code, retry.stdout) == (
        0,
        f"retrying {key}: the file was copied onto itself, so S3 sends the batch "
        f"function a new event\nfollow it with: turnout batch status {key}\n",
    )
    head = batch_app.head(key)
    assert head["ETag"] == etag and head["Metadata"] == {"turnout-retry-of": "r1"}
    assert batch_app.deliver(key)["action"] == "processed"  # the copy's event
    assert batch_app.output(key) == expected_csv(1, rows)
    done = turnout("batch", "status", key)
    assert done.exit_code == 0 and done.stdout.startswith(f"{key}: succeeded\n")


@pytest.mark.parametrize(
    ("body", "state", "exit_code"),
    [
        (csv_text(iris_rows(2)), "succeeded", 0),
        (csv_text(iris_rows(2)) + "x,1,2,3,bad\n", "partial", 3),
        ("a,b\n1,2\n", "failed", 4),
    ],
)
def test_batch_status_tells_the_state_by_its_exit_code(
    batch_app: Batch, turnout: Any, body: str, state: str, exit_code: int
) -> None:
    key = f"incoming/iris@1/{state}.csv"
    batch_app.run(key, body)
    result = turnout("batch", "status", key)
    assert result.exit_code == exit_code
    assert result.stdout.startswith(f"{key}: {state}\n")
    document = json.loads(
        CliRunner()
        .invoke(cli, ["--json", "batch", "status", key, "--batch-bucket", BATCH_BUCKET])
        .stdout
    )
    assert document == {"key": key, "state": state, "manifest": batch_app.manifest(key)}


@pytest.mark.parametrize(
    ("setup", "error", "exit_code"),
    [
        (
            "none",
            "no batch job for {key!r}: its manifest does not exist (is the key "
            "the uploaded file's, under incoming/?)",
            1,
        ),
        (
            "live",
            "not retrying {key}: it is running (its claim holds until {expires})",
            1,
        ),
        (
            "done",
            "not retrying {key}: it already succeeded: upload the rows to "
            "predict as a new file",
            1,
        ),
        (
            "bad",
            "not retrying {key}: it failed for a reason a retry would not change "
            "(the file is empty: a CSV file starts with a header line): fix the file "
            "and upload it again",
            1,
        ),
        (
            "replaced",
            "not retrying {key}: the file was replaced since; the new "
            "upload has its own job",
            1,
        ),
    ],
)
def test_batch_retry_refuses_what_a_retry_would_not_change(
    batch_app: Batch, turnout: Any, setup: str, error: str, exit_code: int
) -> None:
    key = f"incoming/iris@1/{setup}.csv"
    etag = batch_app.upload(key, "" if setup == "bad" else csv_text(iris_rows(2)))
    if setup == "live":
        claim_manifest(batch_app, key, etag, expires_in=300)
    elif setup == "replaced":
        claim_manifest(batch_app, key, etag, expires_in=-1)
        batch_app.upload(key, csv_text(iris_rows(3)))
    elif setup != "none":
        batch_app.deliver(key)
    expires = (
        batch_app.manifest(key).get("claim", {}).get("expires_at")
        if setup != "none"
        else None
    )
    result = turnout("batch", "retry", key)
    assert result.exit_code == exit_code
    assert result.stderr == "error: " + error.format(key=key, expires=expires) + "\n"


@pytest.mark.parametrize("command", ["status", "retry"])
def test_a_key_outside_incoming_is_refused_saying_where_uploads_go(
    batch_app: Batch, turnout: Any, command: str
) -> None:
    # Its outputs base would be incoming/iris@1/iris.csv's: another file's job.
    batch_app.run("incoming/iris@1/iris.csv", csv_text(iris_rows(2)))
    result = turnout("batch", command, "iris@1/iris.csv")
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        "error: key 'iris@1/iris.csv' is not under incoming/: upload to "
        "incoming/{model}/{file}, incoming/{model}@{alias}/{file} or "
        "incoming/{model}@{version}/{file}\n"
    )


@pytest.mark.parametrize(
    ("key", "next_step"),
    [
        (
            "incoming/irs/typo.csv",
            "no model 'irs' is registered: upload the file under incoming/MODEL/ "
            "of a registered model (turnout models lists them), or register irs "
            "(turnout register irs FILE) and then turnout batch retry "
            "incoming/irs/typo.csv",
        ),
        (
            "incoming/iris@prd/typo.csv",
            "set the alias (turnout alias set iris prd VERSION=WEIGHT) and then "
            "turnout batch retry incoming/iris@prd/typo.csv, or upload the file "
            "under another model folder (turnout alias list iris lists its aliases)",
        ),
        (
            "incoming/iris@7/typo.csv",
            "upload the file under incoming/iris@VERSION/ of an existing version "
            "(turnout versions iris lists them)",
        ),
    ],
)
def test_a_job_that_named_an_unknown_model_advises_fixing_the_key_not_a_retry(
    batch_app: Batch, turnout: Any, key: str, next_step: str
) -> None:
    batch_app.run(key, csv_text(iris_rows(2)))
    result = turnout("batch", "status", key)
    assert result.exit_code == 4
    assert result.stdout.splitlines()[-1] == f"  next      {next_step}"


def test_a_job_that_failed_before_knowing_its_model_shows_no_model(
    batch_app: Batch, turnout: Any
) -> None:
    key = "incoming/iris@1/rows.txt"
    batch_app.run(key, csv_text(iris_rows(2)))
    lines = turnout("batch", "status", key).stdout.splitlines()
    assert lines[:2] == [f"{key}: failed", "  model     -"]
    assert lines[-1] == "  next      fix the file and upload it again"


def test_one_rejected_row_is_one_row(batch_app: Batch, turnout: Any) -> None:
    key = "incoming/iris@1/one-bad.csv"
    batch_app.run(key, csv_text(iris_rows(2)) + "x,1,2,3,bad\n")
    lines = turnout("batch", "status", key).stdout.splitlines()
    assert lines[-1] == (f"  errors    {keys.errors_key(key)} (1 row)")


# -- metrics -------------------------------------------------------------------------


def test_each_processed_file_writes_one_metrics_line(
    batch_app: Batch, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "incoming/iris@1/observed.csv"
    text = csv_text(iris_rows(10)).replace("\n1.", "\nx.", 1)
    capsys.readouterr()
    manifest = batch_app.run(key, text)
    (line,) = emf_lines(capsys.readouterr().out)
    assert {
        name: line[name]
        for name in (
            "Model",
            "Version",
            "BatchFiles",
            "BatchRowsRead",
            "BatchRowsPredicted",
            "BatchRowsRejected",
            "BatchFailures",
            "request_id",
            "status",
        )
    } == {
        "Model": "iris",
        "Version": "1",
        "BatchFiles": 1,
        "BatchRowsRead": 10,
        "BatchRowsPredicted": 9,
        "BatchRowsRejected": 1,
        "BatchFailures": 0,
        "request_id": manifest["run_id"],
        "status": "partial",
    }
    assert line["BatchSeconds"] == manifest["seconds"]
    # A second delivery of the same upload is skipped: no file was processed.
    batch_app.deliver(key)
    assert emf_lines(capsys.readouterr().out) == []
