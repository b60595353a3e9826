"""Batch files fanned out across shard invocations: the S3 handler splits, the SQS
handler predicts each shard (``client.lambda_.invoke`` with the messages moto's
SQS delivers, their receive counts included), the last shard assembles; against
the same file predicted in one invocation."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import itertools
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import moto.s3.models
import pytest
from chalice.test import Client
from click.testing import CliRunner, Result

from chalicelib import wiring
from chalicelib.batch import record
from chalicelib.batch.fanout import plan as shard_rules
from chalicelib.predictor import Predictor
from chalicelib.registry.versions import Registry
from tests.demo_support import BATCH_BUCKET
from tests.functional.batch_support import (
    Batch,
    batch_functions,
    count_runs,
    csv_text,
    expected_csv,
    iris_rows,
    process,
)
from tests.functional.rest_support import remember_inspections
from tools.devstack.notifications import create_shard_queue
from turnout.cli import main as cli_module
from turnout.cli.main import cli

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

QUEUE = "turnout-batch-shards-dev"
ATTEMPTS = 3
SHARD_BYTES = 4096


class FanOut(Batch):
    """The batch function and the shard function on moto's S3 and SQS."""

    def __init__(self, s3: S3Client, client: Client, sqs: SQSClient) -> None:
        super().__init__(s3, client)
        self.sqs = sqs
        self.queue_url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
        self.dead_letters_url = sqs.get_queue_url(QueueName=QUEUE + "-dead")["QueueUrl"]

    def receive(self) -> list[dict[str, Any]]:
        """The messages SQS delivers now, each with its receive count."""
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=10,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return [dict(message) for message in response.get("Messages", [])]

    def release(self, messages: list[dict[str, Any]]) -> None:
        """Make received messages visible again (as their visibility timeout
        would), undelivered."""
        for message in messages:
            self.sqs.change_message_visibility(
                QueueUrl=self.queue_url,
                ReceiptHandle=message["ReceiptHandle"],
                VisibilityTimeout=0,
            )

    def deliver_message(self, message: dict[str, Any]) -> Any:
        """One shard invocation as Lambda's SQS poller makes it: the message is
        deleted when the handler returns, made visible again when it raises."""
        record = self.client.events.generate_sqs_event([message["Body"]], QUEUE)
        record["Records"][0]["attributes"]["ApproximateReceiveCount"] = message[
            "Attributes"
        ]["ApproximateReceiveCount"]
        try:
            response = self.client.lambda_.invoke("handle_batch_shard", record)
        except Exception:
            self.sqs.change_message_visibility(
                QueueUrl=self.queue_url,
                ReceiptHandle=message["ReceiptHandle"],
                VisibilityTimeout=0,
            )
            return None
        self.sqs.delete_message(
            QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
        )
        return response.payload[0]

    def pump(self, *, reverse: bool = False, limit: int = 1000) -> int:
        """Deliver messages until the queue is empty; the number of deliveries."""
        deliveries = 0
        while deliveries < limit:
            messages = self.receive()
            if not messages:
                return deliveries
            for message in reversed(messages) if reverse else messages:
                self.deliver_message(message)
                deliveries += 1
        raise AssertionError(f"the queue still had messages after {limit}")

    def dead_letters(self) -> list[dict[str, Any]]:
        response = self.sqs.receive_message(
            QueueUrl=self.dead_letters_url, MaxNumberOfMessages=10
        )
        return [json.loads(message["Body"]) for message in response.get("Messages", [])]

    def parts(self, key: str) -> set[str]:
        return {name for name in self.stored() if ".parts/" in name}


@pytest.fixture
def settings_changes() -> dict[str, Any]:
    return {"batch_shard_bytes": SHARD_BYTES, "batch_progress_seconds": 0.0}


@pytest.fixture
def fanout(
    s3: S3Client,
    demo_registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    settings_changes: dict[str, Any],
    deployed_timeout: None,
) -> Iterator[FanOut]:
    remember_inspections(monkeypatch)
    sqs: SQSClient = boto3.client("sqs", region_name="us-east-1")
    create_shard_queue(sqs, QUEUE, attempts=ATTEMPTS)
    with batch_functions(settings_changes, tmp_path, sqs=sqs) as client:
        yield FanOut(s3, client, sqs)


def rows_with_rejections(count: int) -> tuple[list[list[float]], str]:
    """A CSV of ``count`` good rows with a bad row every 500, and the good rows."""
    rows = iris_rows(count)
    lines = csv_text(rows).splitlines(keepends=True)
    for position in range(len(lines) - 1, 1, -500):
        lines.insert(position, f"5.1,abc,1.4,0.2,bad-{position}\n")
    return rows, "".join(lines)


def single_invocation(fanout: FanOut, key: str, body: str) -> dict[str, Any]:
    """The file predicted by the batch function alone: no queue to fan out to
    (after a first invocation, which read the stage's settings)."""
    fanout.upload(key, body)
    process(fanout, key)
    return fanout.manifest(key)


# -- the same bytes as one invocation ------------------------------------------


@pytest.mark.parametrize("extension", ["csv", "jsonl"])
def test_a_fanned_out_file_is_byte_identical_to_one_invocation_s_output(
    fanout: FanOut, extension: str
) -> None:
    rows, text = rows_with_rejections(3_000)
    if extension == "jsonl":
        text = "".join(
            json.dumps([float(cell) for cell in line.split(",")[:4]]) + "\n"
            if "abc" not in line
            else '[5.1, "abc", 1.4, 0.2]\n'
            for line in text.splitlines(keepends=True)[1:]
        )
    single_key = f"incoming/iris@2/single.{extension}"
    fanned_key = f"incoming/iris@2/fanned.{extension}"
    fanout.upload(fanned_key, text)
    handed = fanout.deliver(fanned_key)
    deliveries = fanout.pump(reverse=True)
    fanned = fanout.manifest(fanned_key)
    single = single_invocation(fanout, single_key, text)

    shards = len(text.encode()) // SHARD_BYTES
    assert handed["action"] == "fanned_out"
    assert handed["manifest"]["progress"]["shards"] in (shards, shards + 1)
    assert deliveries == handed["manifest"]["progress"]["shards"]
    assert fanned["status"] == single["status"] == "partial"
    assert (
        fanned["rows"]
        == single["rows"]
        == {
            "read": 3_006,
            "predicted": 3_000,
            "rejected": 6,
        }
    )
    assert fanout.read(fanout.base(fanned_key) + ".out") == fanout.read(
        fanout.base(single_key) + ".out"
    )
    assert fanout.errors(fanned_key) == fanout.errors(single_key)
    assert {**fanned["output"], "key": None} == {**single["output"], "key": None}
    assert fanned["errors"]["rows"] == 6
    if extension == "csv":
        assert fanout.output(fanned_key) == expected_csv(2, rows)
    # Each shard's bytes and rows, contiguous over the whole file.
    ranges = [shard["bytes"] for shard in fanned["shards"]]
    assert ranges[0][0] == 0 and ranges[-1][1] == len(text.encode())
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    first_rows = [shard["rows"][0] for shard in fanned["shards"]]
    counts = [shard["counts"]["read"] for shard in fanned["shards"]]
    assert first_rows == [1 + sum(counts[:i]) for i in range(len(counts))]
    assert all(shard["seconds"] >= 0 for shard in fanned["shards"])
    assert fanout.parts(fanned_key) == set()
    assert fanout.uploads_in_progress() == []


def test_a_csv_shard_carries_the_header_and_its_rows_only(fanout: FanOut) -> None:
    rows = iris_rows(800)
    key = "incoming/iris@1/header.csv"
    fanout.upload(key, csv_text(rows))
    fanout.deliver(key)
    fanout.pump()

    assert fanout.manifest(key)["status"] == "succeeded"
    assert fanout.output(key) == expected_csv(1, rows)


def test_shards_outputs_over_the_part_minimum_are_copied_in_s3(
    fanout: FanOut, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 5 MiB part minimum, scaled down: big shard outputs are copied, small ones
    # (the last) joined.
    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", 3000)
    monkeypatch.setattr(shard_rules, "MIN_PART_BYTES", 3000)
    copies: list[str] = []
    copy = wiring.container().batch_s3.upload_part_copy

    def counted(**request: Any) -> Any:
        copies.append(request["CopySourceRange"])
        return copy(**request)

    monkeypatch.setattr(wiring.container().batch_s3, "upload_part_copy", counted)
    rows = iris_rows(2_000)
    key = "incoming/iris@1/copied.csv"
    fanout.upload(key, csv_text(rows))
    fanout.deliver(key)
    fanout.pump()

    manifest = fanout.manifest(key)
    assert manifest["status"] == "succeeded"
    assert fanout.output(key) == expected_csv(1, rows)
    assert len(copies) >= len(manifest["shards"]) - 1 >= 10
    etag = fanout.head(fanout.base(key) + ".out")["ETag"]
    assert int(etag.strip('"').split("-")[1]) >= len(manifest["shards"]) - 1


# -- at least once ----------------------------------------------------------------


def test_a_redelivered_shard_recomputes_nothing(
    fanout: FanOut, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = iris_rows(600)
    key = "incoming/iris@1/twice.csv"
    fanout.upload(key, csv_text(rows))
    fanout.deliver(key)
    runs = count_runs(monkeypatch)
    first, *others = fanout.receive()
    fanout.release(others)
    assert fanout.deliver_message(first)["action"] == "shard_done"
    predicted = len(runs)

    again = fanout.deliver_message(first)

    assert predicted >= 1
    assert again == {
        "action": "shard_done",
        "index": json.loads(first["Body"])["index"],
    }
    assert len(runs) == predicted
    fanout.pump()
    assert fanout.output(key) == expected_csv(1, rows)


def test_a_shard_that_keeps_failing_fails_the_job_naming_its_range(
    fanout: FanOut, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = iris_rows(600)
    key = "incoming/iris@1/doomed.csv"
    fanout.upload(key, csv_text(rows))
    fanout.deliver(key)
    run = Predictor.run
    doomed_row = ",".join(map(str, rows[300]))  # not in the first shard

    def fails(self: Predictor, target: Any, inputs: Any, **options: Any) -> Any:
        values = inputs["float_input"]
        if any(",".join(f"{v:.1f}" for v in row) == doomed_row for row in values):
            raise RuntimeError("the disk is on fire")
        return run(self, target, inputs, **options)

    text = csv_text(rows)
    lines = text.splitlines(keepends=True)
    doomed_line = next(i for i, line in enumerate(lines) if line.startswith(doomed_row))
    monkeypatch.setattr(Predictor, "run", fails)
    fanout.pump()

    manifest = fanout.manifest(key)
    assert manifest["status"] == "failed"
    assert manifest["retryable"] is True
    found = re.fullmatch(
        r"shard (\d+) of (\d+) \(bytes (\d+)-(\d+), rows from (\d+)\) failed 3 "
        r"times, the last with: the disk is on fire; its message is in the "
        r"dead-letter queue",
        manifest["error"],
    )
    assert found is not None, manifest["error"]
    start, end = int(found[3]), int(found[4])
    offset = len("".join(lines[:doomed_line]).encode())
    assert start <= offset < end
    rows_before = "".join(lines[1:])[: start - len(lines[0])].count("\n")
    assert int(found[5]) == rows_before + 1
    assert [message["start"] for message in fanout.dead_letters()] == [start]
    assert fanout.parts(key) == set()
    assert ".out" not in {name[-4:] for name in fanout.stored()}


def test_a_re_upload_abandons_the_old_job_cleanly(
    fanout: FanOut, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = iris_rows(600, seed=1), iris_rows(700, seed=2)
    key = "incoming/iris@1/replaced.csv"
    fanout.upload(key, csv_text(old))
    fanout.deliver(key)
    first, *others = fanout.receive()
    fanout.release(others)
    fanout.deliver_message(first)  # one shard of the old job done
    fanout.upload(key, csv_text(new))
    fanout.deliver(key)
    runs = count_runs(monkeypatch)

    fanout.pump()

    manifest = fanout.manifest(key)
    assert manifest["status"] == "succeeded"
    assert manifest["rows"]["read"] == 700
    assert fanout.output(key) == expected_csv(1, new)
    assert sum(runs) == 700  # the old job's shards predicted nothing more
    assert fanout.parts(key) == set()
    assert fanout.uploads_in_progress() == []


def test_a_quoted_line_break_across_a_cut_fails_the_job_saying_what_to_do(
    fanout: FanOut,
) -> None:
    rows = iris_rows(400)
    header = "sepal_length,sepal_width,petal_length,petal_width,note"
    note = '"' + "a long note\n" * 600 + '"'
    lines = [header] + [",".join([*map(str, row), note]) for row in rows[:2]]
    key = "incoming/iris@1/quoted.csv"
    fanout.upload(key, "\n".join(lines) + "\n")
    fanout.deliver(key)
    fanout.pump()

    manifest = fanout.manifest(key)
    assert manifest["status"] == "failed"
    assert manifest["retryable"] is False
    assert manifest["error"].startswith("shard 1 of ")
    assert manifest["error"].endswith(
        "a quoted CSV field holds a line break, which a byte range cannot tell from "
        "a line end; upload the file gzip-compressed (.csv.gz) to process it in one "
        "invocation"
    )
    assert fanout.parts(key) == set()


def test_a_gzip_file_is_processed_in_one_invocation(fanout: FanOut) -> None:
    rows = iris_rows(3_000)
    key = "incoming/iris@1/whole.csv.gz"
    fanout.upload(key, gzip.compress(csv_text(rows).encode()))
    handed = fanout.deliver(key)

    assert handed["action"] == "processed"
    assert fanout.receive() == []
    assert fanout.output(key) == expected_csv(1, rows)


def test_a_running_job_s_manifest_says_how_far_it_is(fanout: FanOut) -> None:
    rows = iris_rows(1_000)
    key = "incoming/iris@1/progress.csv"
    fanout.upload(key, csv_text(rows))
    fanout.deliver(key)
    messages = fanout.receive()
    total = fanout.manifest(key)["progress"]["shards"]
    fanout.release(messages[2:])
    fanout.deliver_message(messages[0])
    fanout.deliver_message(messages[1])

    manifest = fanout.manifest(key)
    shards = sorted(json.loads(m["Body"])["index"] for m in messages[:2])

    assert manifest["status"] == "running"
    progress = manifest["progress"]
    assert (progress["shards_done"], progress["shards"]) == (2, total)
    sizes = [json.loads(m["Body"]) for m in messages[:2]]
    assert progress["bytes_done"] == sum(m["end"] - m["start"] for m in sizes)
    assert progress["rows_done"] == manifest["rows"]["read"] > 0
    assert len(shards) == 2


# -- the CLI: submit, follow, list ----------------------------------------------


@pytest.fixture
def turnout(fanout: FanOut, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """``turnout(*args)``: the CLI on moto's batch bucket; while ``--wait`` waits,
    S3 and SQS deliver what is pending (as Lambda would in that second)."""
    monkeypatch.setattr(cli_module, "s3_client", lambda endpoint_url: fanout.s3)
    delivered: set[tuple[str, str]] = set()

    def deliver_pending(seconds: float) -> None:
        # The functions run in this process: their log lines (metrics) go to
        # their own stdout, not the command's.
        with contextlib.redirect_stdout(io.StringIO()):
            for name in fanout.stored():
                etag = fanout.head(name)["ETag"]
                if name.startswith("incoming/") and (name, etag) not in delivered:
                    delivered.add((name, etag))
                    fanout.deliver(name)
            fanout.pump()

    monkeypatch.setattr(cli_module, "pause", deliver_pending)

    def run(*args: str) -> Result:
        return CliRunner().invoke(cli, [*args, "--batch-bucket", BATCH_BUCKET])

    return run


def test_submit_wait_uploads_follows_the_fanned_out_job_and_exits_with_its_state(
    fanout: FanOut, turnout: Callable[..., Result], tmp_path: Path
) -> None:
    rows, text = rows_with_rejections(1_000)
    local = tmp_path / "day one.csv"
    local.write_text(text)

    result = turnout("batch", "submit", str(local), "iris@2", "--wait")

    short_hash = hashlib.sha256(text.encode()).hexdigest()[:12]
    key = f"incoming/iris@2/day one-{short_hash}.csv"
    manifest = fanout.manifest(key)
    assert result.exit_code == 3, result.output
    assert manifest["status"] == "partial"
    assert len(manifest["shards"]) > 1
    assert result.stdout.splitlines() == [
        f"{key}: partial",
        "  model     iris (2)",
        "  rows      1002 read, 1000 predicted, 2 rejected",
        f"  run       {manifest['run_id']} started {manifest['started_at']}",
        f"  shards    {len(manifest['shards'])} (their rows and seconds: --json)",
        f"  output    outgoing/iris@2/day one-{short_hash}.csv.out "
        f"({manifest['output']['size']} bytes)",
        f"  errors    outgoing/iris@2/day one-{short_hash}.csv.errors.jsonl (2 rows)",
    ]
    assert fanout.output(key) == expected_csv(2, rows)


def test_submit_without_wait_says_how_to_follow_and_refuses_a_bad_model(
    fanout: FanOut, turnout: Callable[..., Result], tmp_path: Path
) -> None:
    local = tmp_path / "rows.csv"
    local.write_text(csv_text(iris_rows(10)))

    submitted = turnout("batch", "submit", str(local), "iris")
    refused = turnout("batch", "submit", str(local), "Iris!")

    key = f"incoming/iris/rows-{sha256_of(local)[:12]}.csv"
    assert submitted.exit_code == 0
    assert submitted.stdout.splitlines() == [
        f"uploaded {local} to s3://{BATCH_BUCKET}/{key} ({local.stat().st_size} bytes)",
        f"follow it with: turnout batch status {key}",
    ]
    assert key in fanout.stored()
    assert refused.exit_code == 1
    assert refused.stderr.startswith(
        f"error: key 'incoming/Iris!/rows-{sha256_of(local)[:12]}.csv' has an "
        "invalid model folder:"
    )


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_different_files_of_one_name_get_two_jobs(
    fanout: FanOut, turnout: Callable[..., Result], tmp_path: Path
) -> None:
    first, second = tmp_path / "a" / "data.csv", tmp_path / "b" / "data.csv"
    for local, rows in ((first, iris_rows(3)), (second, iris_rows(4, seed=1))):
        local.parent.mkdir()
        local.write_text(csv_text(rows))
        assert turnout("batch", "submit", str(local), "iris@1", "--wait").exit_code == 0

    keys = [f"incoming/iris@1/data-{sha256_of(p)[:12]}.csv" for p in (first, second)]
    assert keys[0] != keys[1]
    assert fanout.output(keys[0]) == expected_csv(1, iris_rows(3))
    assert fanout.output(keys[1]) == expected_csv(1, iris_rows(4, seed=1))


def test_the_same_content_again_is_not_run_again_and_shows_its_job(
    fanout: FanOut, turnout: Callable[..., Result], tmp_path: Path
) -> None:
    local = tmp_path / "rows.csv"
    local.write_text(csv_text(iris_rows(5)))
    key = f"incoming/iris@1/rows-{sha256_of(local)[:12]}.csv"
    done = turnout("batch", "submit", str(local), "iris@1", "--wait")
    assert done.exit_code == 0, done.output
    manifest = fanout.manifest(key)

    again = turnout("batch", "submit", str(local), "iris@1")
    renamed = turnout("batch", "submit", str(local), "iris@1", "--name", "b.csv")

    assert again.exit_code == 0
    assert again.stdout.splitlines()[:3] == [
        f"{local} is already at s3://{BATCH_BUCKET}/{key} (the same content): not "
        "run again; to run it again, pass another --name",
        f"{key}: succeeded",
        "  model     iris (1)",
    ]
    waited = turnout("batch", "submit", str(local), "iris@1", "--wait")
    assert waited.exit_code == 0
    assert waited.stdout.splitlines()[1] == f"{key}: succeeded"
    assert fanout.manifest(key)["run_id"] == manifest["run_id"]
    assert renamed.stdout.splitlines()[0] == (
        f"uploaded {local} to s3://{BATCH_BUCKET}/incoming/iris@1/b.csv "
        f"({local.stat().st_size} bytes)"
    )


def test_status_of_a_running_fanned_out_job_shows_its_progress(
    fanout: FanOut, turnout: Callable[..., Result]
) -> None:
    rows = iris_rows(1_000)
    key = "incoming/iris@1/follow.csv"
    fanout.upload(key, csv_text(rows))
    fanout.deliver(key)
    first, *others = fanout.receive()
    fanout.release(others)
    fanout.deliver_message(first)
    progress = fanout.manifest(key)["progress"]

    result = turnout("batch", "status", key)

    assert result.exit_code == 6
    done, total = progress["bytes_done"], progress["bytes"]
    assert (
        f"  progress  1/{progress['shards']} shards, {done / 1e6:.0f}/"
        f"{total / 1e6:.0f} MB ({100 * done / total:.0f}%), "
        f"{progress['rows_done']:,} rows"
    ) in result.stdout.splitlines()


def test_list_shows_the_jobs_of_the_period(
    fanout: FanOut, turnout: Callable[..., Result]
) -> None:
    fanout.run("incoming/iris@1/a.csv", csv_text(iris_rows(5)))
    fanout.run("incoming/iris@1/b.csv", "sepal_length\nx\n")

    listed = turnout("batch", "list", "--since", "1d")
    nothing = turnout("batch", "list", "--since", "0m")
    refused = turnout("batch", "list", "--since", "yesterday")

    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["KEY", "STATE", "ROWS", "REJECTED", "STARTED"]
    assert [line.split()[:4] for line in lines[1:]] == [
        ["incoming/iris@1/a.csv", "succeeded", "5", "0"],
        ["incoming/iris@1/b.csv", "failed", "0", "0"],
    ]
    assert nothing.exit_code == 2  # an empty period is no period
    assert "'0m' is not a duration like 30m, 12h, 1d or 2w" in nothing.stderr
    assert refused.exit_code == 2
    assert "'yesterday' is not a duration like 30m, 12h, 1d or 2w" in refused.stderr


@pytest.mark.parametrize(("every", "writes"), [(0.0, 10), (3600.0, 0)])
def test_a_job_in_one_invocation_writes_its_progress_at_a_bounded_rate(
    fanout: FanOut,
    monkeypatch: pytest.MonkeyPatch,
    settings_changes: dict[str, Any],
    every: float,
    writes: int,
) -> None:
    settings_changes.update(batch_rows_per_chunk=100, batch_progress_seconds=every)
    written: list[record.JobRecord] = []
    write = record.Ledger.write

    def remembered(ledger: record.Ledger, document: record.JobRecord) -> None:
        written.append(document)
        write(ledger, document)

    monkeypatch.setattr(record.Ledger, "write", remembered)
    key = "incoming/iris@1/steps.csv.gz"
    fanout.upload(key, gzip.compress(csv_text(iris_rows(1_000)).encode()))

    fanout.deliver(key)

    progress = [document["progress"] for document in written if "progress" in document]
    assert [step["rows_done"] for step in progress] == list(range(100, 1_001, 100))[
        :writes
    ]
    size = fanout.head(key)["ContentLength"]
    assert all(step["shards"] == 1 and step["bytes"] == size for step in progress)
    assert [document["status"] for document in written] == ["running"] * (
        1 + writes
    ) + ["succeeded"]
