"""Batch benchmark: Turnout's S3 handler against two references measured in the
same run, on iris CSV files of 100k, 1M and 10M rows.

    make bench-batch        (.venv/bin/python -m bench.batch [--rows 100000,...])

- Throughput, rows per second, S3 being moto's in-process mock in one process
  (the file generated into it first, untimed; the model session warm):
  * ceiling: a bare ``InferenceSession.run`` on the same rows already in memory;
  * pandas: the usual tutorial, ``read_csv`` of the whole object, ``run``,
    ``to_csv``, ``put_object``;
  * turnout: ``chalicelib.batch.job.process_upload``, the handler's whole job, from
    the HEAD of the object to its manifest.
- Peak RSS of the same jobs with S3 on a moto server in its own process: moto
  keeps what it stores in memory and copies whole objects to serve a GET and to
  complete a multipart upload, so in-process its copies would be counted as the
  handler's. The peak is read from /proc (VmHWM, reset when the job starts).

Each measurement runs in a fresh process. moto keeps objects over 5 MiB in
temporary files: ``TMPDIR`` points at /dev/shm so that its S3 is in memory.
Prints a table and writes it to ``bench/results/batch.json``.
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
LABELS = ["setosa", "versicolor", "virginica"]
ROWS_PER_BLOCK = 1_000_000
UPLOAD_PART_BYTES = 64 * 1024 * 1024
CASES = ("ceiling", "pandas", "turnout")
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


def upload_csv(s3: S3Client, key: str, rows: int) -> None:
    """Stream the CSV into S3 as a multipart upload: memory stays at one part."""
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

    for block in csv_blocks(rows):
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
    if case == "turnout":
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


def child_main(arguments: argparse.Namespace) -> None:
    """One measurement (``--case``); prints its result as one JSON line."""
    rows = arguments.rows_in_child
    key = f"incoming/iris@1/bench-{arguments.case}-{rows}.csv"
    with tempfile.TemporaryDirectory() as cache_dir:
        configure_turnout(cache_dir)
        if arguments.endpoint:
            key = arguments.key
            result = measure(arguments.case, rows, key)
        else:
            from moto import mock_aws

            with mock_aws():
                import boto3

                s3 = boto3.client("s3")
                register_iris(s3)
                if arguments.case != "ceiling":
                    upload_csv(s3, key, rows)
                result = measure(arguments.case, rows, key)
    print(json.dumps(result))


def run_child(
    case: str, rows: int, endpoint: str | None, key: str = ""
) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.batch", "--case", case]
    command += ["--rows-in-child", str(rows), "--key", key]
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
    rows_per_second: float
    seconds: float
    peak_rss_mib: float | None


def run(sizes: Sequence[int], repeat: int) -> list[Row]:
    table: list[Row] = []
    server = start_moto(log=Path(tempfile.gettempdir()) / "bench-batch-moto.log")
    try:
        s3 = s3_client(server.url)
        register_iris(s3)
        for rows in sizes:
            speed: dict[str, float] = {}
            # The best of ``repeat`` runs on a shared machine; 10M rows once.
            repeats = repeat if rows <= 1_000_000 else 1
            for case in CASES:
                runs = [run_child(case, rows, None) for _ in range(repeats)]
                speed[case] = min(result["seconds"] for result in runs)
            key = f"incoming/iris@1/bench-{rows}.csv"
            upload_csv(s3, key, rows)
            memory: dict[str, float] = {}
            for case in CASES:
                result = run_child(case, rows, server.url, key)
                memory[case] = result["peak_rss"] / 2**20
                s3.delete_object(
                    Bucket=BATCH_BUCKET,
                    Key=keys.record_key(key),
                )
            s3.delete_object(Bucket=BATCH_BUCKET, Key=key)
            results = [
                Row(rows, case, rows / speed[case], speed[case], memory[case])
                for case in CASES
            ]
            table += results
            for row in results:
                print(format_row(row, results), flush=True)
    finally:
        server.stop()
    return table


HEADING = (
    f"{'rows':>11}  {'case':<8} {'rows/s':>13} {'seconds':>8} {'vs pandas':>10} "
    f"{'peak MiB':>8}"
)


def format_row(row: Row, table: Sequence[Row]) -> str:
    pandas = next(r for r in table if r.rows == row.rows and r.case == "pandas")
    ratio = row.rows_per_second / pandas.rows_per_second
    memory = f"{row.peak_rss_mib:8.0f}" if row.peak_rss_mib is not None else "       -"
    return (
        f"{row.rows:>11,}  {row.case:<8} {row.rows_per_second:>13,.0f} "
        f"{row.seconds:>8.2f} {ratio:>9.2f}x {memory}"
    )


def summary(table: Sequence[Row]) -> str:
    """Peak RSS across sizes, and what one invocation gets through."""
    turnout = [row for row in table if row.case == "turnout"]
    lines = []
    if len(turnout) > 1 and turnout[-2].peak_rss_mib:
        first, last = turnout[-2], turnout[-1]
        assert first.peak_rss_mib and last.peak_rss_mib
        lines.append(
            f"turnout peak RSS, {last.rows:,} rows against {first.rows:,}: "
            f"{last.peak_rss_mib / first.peak_rss_mib:.2f}x"
        )
    if turnout:
        largest = turnout[-1]
        seconds = LAMBDA_SECONDS - Settings().batch_safety_seconds
        rows = largest.rows_per_second * seconds
        lines.append(
            f"one 15-minute invocation, extrapolated from {largest.rows:,} rows: "
            f"about {rows / 1e6:,.0f}M rows ({rows * 24 / 1e9:.1f} GB of this CSV) "
            f"in {seconds:.0f} s"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000,10000000")
    parser.add_argument("--repeat", type=int, default=3, help="best of, for speed")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--rows-in-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--key", default="", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.case:
        child_main(arguments)
        return 0
    sizes = [int(value) for value in arguments.rows.split(",")]
    print(HEADING)
    table = run(sizes, arguments.repeat)
    print(summary(table))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps([asdict(row) for row in table], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
