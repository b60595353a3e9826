"""Batch benchmark: Turnout's S3 handler against two references measured in the
same run, on iris files of 1M and 4M rows (CSV, and JSON Lines).

    make bench-batch        (.venv/bin/python -m bench.batch [--rows 1000000,...])

- Throughput, rows per second, two ways, every measurement in a fresh process:
  * "mock": S3 is moto's in-process mock (the file generated into it first,
    untimed; the model session warm), so S3's own work (moto storing parts and
    completing the upload) counts as the job's;
  * "server": S3 is a moto server in its own process, as S3 is outside a Lambda
    function: the figure the targets are judged on.
  Cases: ceiling, a bare ``InferenceSession.run`` on the same rows already in
  memory; pandas, the usual tutorial (``read_csv`` of the whole object, ``run``,
  ``to_csv``, ``put_object``); turnout, ``chalicelib.batch.job.process_upload``,
  the handler's whole job from the HEAD of the object to its manifest, on the
  CSV file; jsonl, the same job on the same rows as JSON Lines objects.
- Peak RSS of the server runs, read from /proc (VmHWM, reset when the job
  starts): in-process, moto's copies of whole objects would count as the job's.

moto keeps objects over 5 MiB in temporary files: ``TMPDIR`` points at /dev/shm
so that its S3 is in memory. Prints a table and the targets met or missed, and
writes them to ``bench/results/batch.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chalicelib.batch import keys
from chalicelib.config import Settings
from tools.devstack.clients import aws_environment, s3_client
from tools.devstack.processes import start_moto
from tools.devstack.seed import create_buckets
from tools.devstack.stage import ROOT

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

RESULTS = ROOT / "bench" / "results" / "batch.json"
MODEL_BUCKET = "turnout-models-bench"
BATCH_BUCKET = "turnout-batch-bench"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
HEADER = ",".join([*FEATURES, "id"]).encode() + b"\n"
JSONL_PREFIX, JSONL_MIDDLE = b'{"float_input": [', b'], "id": "'
LABELS = ["setosa", "versicolor", "virginica"]
ROWS_PER_BLOCK = 1_000_000
UPLOAD_PART_BYTES = 64 * 1024 * 1024
CASES = ("ceiling", "pandas", "turnout", "jsonl")
# The targets: CSV rows/s at the largest size, the ratio to pandas at the
# smallest, peak memory across sizes, JSON Lines rows/s.
TARGET_CSV_ROWS_PER_SECOND = 2_000_000
TARGET_VS_PANDAS = 10.0
TARGET_MEMORY_RATIO = 1.1
TARGET_JSONL_ROWS_PER_SECOND = 1_000_000
# Lambda stops a function after 900 s; the job keeps batch_safety_seconds of it.
LAMBDA_SECONDS = 900.0


# -- the data ---------------------------------------------------------------------


def feature_block(start: int, count: int) -> np.ndarray:
    """Rows ``start`` to ``start + count`` of the benchmark's iris features, in
    tenths (1 to 79, that is 0.1 to 7.9): the same for every case."""
    rng = np.random.default_rng(start)
    return rng.integers(1, 80, size=(count, 4))


def csv_blocks(rows: int) -> Iterator[bytes]:
    """The CSV file, header first, a block of rows at a time (24 bytes a row:
    four features like 5.1 and an 8-digit id)."""
    yield HEADER
    for start in range(0, rows, ROWS_PER_BLOCK):
        count = min(ROWS_PER_BLOCK, rows - start)
        tenths = feature_block(start, count)
        line = np.empty((count, 24), np.uint8)
        for column in range(4):
            line[:, 4 * column] = 48 + tenths[:, column] // 10
            line[:, 4 * column + 1] = ord(".")
            line[:, 4 * column + 2] = 48 + tenths[:, column] % 10
            line[:, 4 * column + 3] = ord(",")
        ids = np.arange(start, start + count)
        for digit in range(8):
            line[:, 16 + digit] = 48 + (ids // 10 ** (7 - digit)) % 10
        line[:, 23] = ord("\n")
        yield line.tobytes()


def jsonl_blocks(rows: int) -> Iterator[bytes]:
    """The same rows as JSON Lines objects, a block at a time (55 bytes a row):
    ``{"float_input": [5.1, 3.5, 1.4, 0.2], "id": "0012345"}``."""
    for block in csv_blocks(rows):
        if block == HEADER:
            continue
        csv = np.frombuffer(block, np.uint8).reshape(-1, 24)
        count = csv.shape[0]
        line = np.empty((count, 55), np.uint8)
        line[:, :17] = np.frombuffer(JSONL_PREFIX, np.uint8)
        for feature in range(4):
            column = 17 + 5 * feature
            line[:, column : column + 3] = csv[:, 4 * feature : 4 * feature + 3]
            line[:, column + 3 : column + 5] = np.frombuffer(b", ", np.uint8)
        line[:, 35:45] = np.frombuffer(JSONL_MIDDLE, np.uint8)
        line[:, 45:52] = csv[:, 16:23]
        line[:, 52:55] = np.frombuffer(b'"}\n', np.uint8)
        yield line.tobytes()


def upload_csv(s3: S3Client, key: str, rows: int) -> None:
    """Stream the CSV into S3 as a multipart upload: memory stays at one part."""
    upload_blocks(s3, key, csv_blocks(rows))


def upload_jsonl(s3: S3Client, key: str, rows: int) -> None:
    upload_blocks(s3, key, jsonl_blocks(rows))


def upload_blocks(s3: S3Client, key: str, blocks: Iterator[bytes]) -> None:
    upload = s3.create_multipart_upload(Bucket=BATCH_BUCKET, Key=key)["UploadId"]
    parts: list[dict[str, Any]] = []
    pending: list[bytes] = []
    size = 0

    def send() -> None:
        number = len(parts) + 1
        response = s3.upload_part(
            Bucket=BATCH_BUCKET,
            Key=key,
            UploadId=upload,
            PartNumber=number,
            Body=b"".join(pending),
        )
        parts.append({"PartNumber": number, "ETag": response["ETag"]})
        pending.clear()

    for block in blocks:
        pending.append(block)
        size += len(block)
        if size >= UPLOAD_PART_BYTES:
            send()
            size = 0
    if pending or not parts:
        send()
    s3.complete_multipart_upload(
        Bucket=BATCH_BUCKET,
        Key=key,
        UploadId=upload,
        MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
    )


def register_iris(s3: S3Client) -> None:
    from chalicelib.registry.versions import Registry

    create_buckets(s3, MODEL_BUCKET, BATCH_BUCKET)
    Registry(s3, MODEL_BUCKET).register(
        "iris", (ROOT / "models" / "iris-v1.onnx").read_bytes()
    )


# -- one measurement, in a fresh process ----------------------------------------------


def reset_peak_rss() -> None:
    """Start a new peak: Linux resets VmHWM to the current RSS on "5"."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def configure_turnout(cache_dir: str) -> None:
    """The deployed batch function's settings (``.chalice/config.json``, dev
    stage), on the benchmark's buckets."""
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    stage = config["stages"]["dev"]
    function = stage["lambda_functions"]["handle_batch_upload"]
    os.environ.update(
        {
            **config.get("environment_variables", {}),
            **stage.get("environment_variables", {}),
            **function.get("environment_variables", {}),
            "TURNOUT_MODEL_BUCKET": MODEL_BUCKET,
            "TURNOUT_BATCH_BUCKET": BATCH_BUCKET,
            "TURNOUT_MODEL_CACHE_DIR": cache_dir,
        }
    )


def measure(case: str, rows: int, key: str) -> dict[str, float]:
    """Run one case on S3 as configured (mock or endpoint): seconds and peak RSS."""
    import boto3
    import onnxruntime

    from chalicelib import wiring
    from chalicelib.batch import job
    from chalicelib.batch.runtime import BatchRuntime

    s3 = boto3.client("s3")
    if case in ("turnout", "jsonl"):
        predictor = wiring.predictor()
        target = predictor.resolve("iris", version=1)
        predictor.models.get(target.manifest)  # a warm container has its session
        reset_peak_rss()
        started = time.perf_counter()
        result = job.process_upload(
            BATCH_BUCKET,
            key,
            BatchRuntime(
                s3=wiring.container().batch_s3,
                predictor=predictor,
                settings=wiring.settings(),
                seconds_left=lambda: LAMBDA_SECONDS,
            ),
        )
        seconds = time.perf_counter() - started
        assert result is not None
        manifest = result["manifest"]
        assert manifest["status"] == "succeeded", manifest
        assert manifest["rows"]["predicted"] == rows, manifest
        return {"seconds": seconds, "peak_rss": peak_rss_bytes()}

    session = onnxruntime.InferenceSession(
        str(ROOT / "models" / "iris-v1.onnx"), providers=["CPUExecutionProvider"]
    )
    if case == "ceiling":
        features = np.concatenate(
            [
                feature_block(start, min(ROWS_PER_BLOCK, rows - start)) / 10.0
                for start in range(0, rows, ROWS_PER_BLOCK)
            ]
        ).astype(np.float32)
        session.run(None, {"float_input": features[:1000]})
        reset_peak_rss()
        started = time.perf_counter()
        for start in range(0, rows, ROWS_PER_BLOCK):
            session.run(None, {"float_input": features[start : start + ROWS_PER_BLOCK]})
        return {
            "seconds": time.perf_counter() - started,
            "peak_rss": peak_rss_bytes(),
        }

    import pandas as pd

    reset_peak_rss()
    started = time.perf_counter()
    body = s3.get_object(Bucket=BATCH_BUCKET, Key=key)["Body"].read()
    frame = pd.read_csv(io.BytesIO(body))
    labels, probabilities = session.run(
        None, {"float_input": frame[FEATURES].to_numpy(np.float32)}
    )
    frame["label"] = np.array(LABELS)[labels]
    for index, name in enumerate(LABELS):
        frame[f"probability_{name}"] = probabilities[:, index]
    s3.put_object(
        Bucket=BATCH_BUCKET,
        Key=key.replace("incoming/", "outgoing/") + ".out",
        Body=frame.to_csv(index=False).encode(),
    )
    return {"seconds": time.perf_counter() - started, "peak_rss": peak_rss_bytes()}


def file_key(case: str, rows: int) -> str:
    """The input's key: JSON Lines for the jsonl case, CSV for the others."""
    extension = "jsonl" if case == "jsonl" else "csv"
    return f"incoming/iris@1/bench-{case}-{rows}.{extension}"


def upload(s3: S3Client, key: str, rows: int) -> None:
    if key.endswith(".jsonl"):
        upload_jsonl(s3, key, rows)
    else:
        upload_csv(s3, key, rows)


def child_main(arguments: argparse.Namespace) -> None:
    """One measurement (``--case``); prints its result as one JSON line."""
    rows = arguments.rows_in_child
    key = file_key(arguments.case, rows)
    with tempfile.TemporaryDirectory() as cache_dir:
        configure_turnout(cache_dir)
        if arguments.endpoint:
            result = measure(arguments.case, rows, key)
        else:
            from moto import mock_aws

            with mock_aws():
                import boto3

                s3 = boto3.client("s3")
                register_iris(s3)
                if arguments.case != "ceiling":
                    upload(s3, key, rows)
                result = measure(arguments.case, rows, key)
    print(json.dumps(result))


def run_child(case: str, rows: int, endpoint: str | None) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.batch", "--case", case]
    command += ["--rows-in-child", str(rows)]
    environment = aws_environment(endpoint)
    environment["TMPDIR"] = "/dev/shm"
    if endpoint:
        command += ["--endpoint"]
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{case} on {rows} rows failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- the table ------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    rows: int
    case: str
    mock_rows_per_second: float
    server_rows_per_second: float
    peak_rss_mib: float


def run(sizes: Sequence[int], repeat: int) -> list[Row]:
    table: list[Row] = []
    server = start_moto(log=Path(tempfile.gettempdir()) / "bench-batch-moto.log")
    try:
        s3 = s3_client(server.url)
        register_iris(s3)
        for rows in sizes:
            results = []
            for case in CASES:
                mock = min(
                    run_child(case, rows, None)["seconds"] for _ in range(repeat)
                )
                key = file_key(case, rows)
                if case != "ceiling":
                    upload(s3, key, rows)
                measured = run_child(case, rows, server.url)
                for name in (key, key.replace("incoming/", "outgoing/") + ".out"):
                    s3.delete_object(Bucket=BATCH_BUCKET, Key=name)
                s3.delete_object(
                    Bucket=BATCH_BUCKET,
                    Key=keys.record_key(key),
                )
                results.append(
                    Row(
                        rows,
                        case,
                        rows / mock,
                        rows / measured["seconds"],
                        measured["peak_rss"] / 2**20,
                    )
                )
            table += results
            for row in results:
                print(format_row(row, results), flush=True)
    finally:
        server.stop()
    return table


HEADING = (
    f"{'rows':>11}  {'case':<8} {'rows/s mock':>12} {'rows/s server':>14} "
    f"{'vs pandas':>10} {'peak MiB':>8}"
)


def format_row(row: Row, table: Sequence[Row]) -> str:
    pandas = next(r for r in table if r.rows == row.rows and r.case == "pandas")
    ratio = row.server_rows_per_second / pandas.server_rows_per_second
    return (
        f"{row.rows:>11,}  {row.case:<8} {row.mock_rows_per_second:>12,.0f} "
        f"{row.server_rows_per_second:>14,.0f} {ratio:>9.1f}x "
        f"{row.peak_rss_mib:8.0f}"
    )


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    met: bool


def targets(table: Sequence[Row]) -> list[Target]:
    """The issue's targets, judged on the server runs (S3 outside the process)."""

    def find(case: str, rows: int) -> Row:
        return next(r for r in table if r.case == case and r.rows == rows)

    smallest = min(row.rows for row in table)
    largest = max(row.rows for row in table)
    csv = find("turnout", largest).server_rows_per_second
    jsonl = find("jsonl", largest).server_rows_per_second
    ratio = (
        find("turnout", smallest).server_rows_per_second
        / find("pandas", smallest).server_rows_per_second
    )
    memory = (
        find("turnout", largest).peak_rss_mib / find("turnout", smallest).peak_rss_mib
    )
    return [
        Target(
            f"CSV at least {TARGET_CSV_ROWS_PER_SECOND / 1e6:.0f}M rows/s at "
            f"{largest:,} rows",
            f"{csv / 1e6:.2f}M rows/s",
            csv >= TARGET_CSV_ROWS_PER_SECOND,
        ),
        Target(
            f"CSV at least {TARGET_VS_PANDAS:.0f}x pandas at {smallest:,} rows",
            f"{ratio:.1f}x",
            ratio >= TARGET_VS_PANDAS,
        ),
        Target(
            f"peak memory flat: {largest:,} rows within {TARGET_MEMORY_RATIO}x of "
            f"{smallest:,}",
            f"{memory:.2f}x",
            memory <= TARGET_MEMORY_RATIO,
        ),
        Target(
            f"JSON Lines at least {TARGET_JSONL_ROWS_PER_SECOND / 1e6:.0f}M rows/s "
            f"at {largest:,} rows",
            f"{jsonl / 1e6:.2f}M rows/s",
            jsonl >= TARGET_JSONL_ROWS_PER_SECOND,
        ),
    ]


def summary(table: Sequence[Row]) -> str:
    """The targets met or missed, and what one invocation gets through."""
    lines = [
        f"{target.name:<52} {target.measured:>14}  {'met' if target.met else 'MISSED'}"
        for target in targets(table)
    ]
    largest = max(
        (row for row in table if row.case == "turnout"), key=lambda row: row.rows
    )
    seconds = LAMBDA_SECONDS - Settings().batch_safety_seconds
    rows = largest.server_rows_per_second * seconds
    lines.append(
        f"one 15-minute invocation, extrapolated from {largest.rows:,} rows: "
        f"about {rows / 1e6:,.0f}M rows ({rows * 24 / 1e9:.1f} GB of this CSV) "
        f"in {seconds:.0f} s"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,4000000")
    parser.add_argument("--repeat", type=int, default=2, help="best of, for mock")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--rows-in-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.case:
        child_main(arguments)
        return 0
    sizes = [int(value) for value in arguments.rows.split(",")]
    print(f"load average: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
    print(HEADING)
    table = run(sizes, arguments.repeat)
    print(summary(table))
    print(f"load average: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
    RESULTS.parent.mkdir(exist_ok=True)
    results = {
        "rows": [asdict(row) for row in table],
        "targets": [asdict(target) for target in targets(table)],
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
