"""Fan-out benchmark: one iris CSV file (10M rows by default) predicted in one
invocation, then fanned out to 1 and to 2 concurrent shard workers, on a moto
server (S3 and SQS) in its own process.

    make bench-fanout      (.venv/bin/python -m bench.fanout [--rows N] [--workers 1,2])

- *one invocation* (the floor): ``process_upload`` with no queue, in a fresh
  process: the file read, predicted and written by one function.
- *fanned out, W workers*: ``process_upload`` with the shard queue (the split:
  the header, the cuts' ranged reads, the running manifest, the messages), then W
  worker processes, each delivering one message at a time to ``process_shard`` as
  Lambda's SQS event source would, until the final manifest. Wall time from the
  split's start to the final manifest.
- Per shard: the split's seconds over the shards; each shard's fixed cost (its
  wall time minus the time its rows take at the one-invocation rate); the
  assembly (the last shard's wall time minus its own prediction).
- The outputs are compared byte for byte with the one-invocation output.

Each measurement runs in a fresh process; moto keeps objects over 5 MiB in
temporary files, so ``TMPDIR`` is /dev/shm. Prints a table and writes it to
``bench/results/fanout.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.batch import BATCH_BUCKET, configure_turnout, register_iris, upload_csv
from chalicelib.batch import keys
from tools.devstack.clients import aws_environment, s3_client, sqs_client
from tools.devstack.notifications import create_shard_queue
from tools.devstack.processes import start_moto
from tools.devstack.stage import ROOT, stage_settings

RESULTS = ROOT / "bench" / "results" / "fanout.json"
SOURCE = "incoming/iris@1/bench-fanout-source.csv"
LAMBDA_SECONDS = 900.0


# -- the children ------------------------------------------------------------------


def child_main(arguments: argparse.Namespace) -> None:
    """One process's part (``--child``); prints its result as one JSON line."""
    with tempfile.TemporaryDirectory() as cache_dir:
        configure_turnout(cache_dir)
        os.environ["TURNOUT_BATCH_SHARD_BYTES"] = str(arguments.shard_bytes)
        from chalicelib import wiring
        from chalicelib.batch import job
        from chalicelib.batch.fanout import shard
        from chalicelib.batch.runtime import BatchRuntime

        wired = wiring.container()
        predictor = wired.predictor
        predictor.models.get(predictor.resolve("iris", version=1).manifest)
        if arguments.child in ("single", "split"):
            started = time.perf_counter()
            result = job.process_upload(
                BATCH_BUCKET,
                arguments.key,
                BatchRuntime(
                    s3=wired.batch_s3,
                    predictor=predictor,
                    settings=wired.settings,
                    seconds_left=lambda: LAMBDA_SECONDS,
                    shard_queue=(
                        wired.shard_queue if arguments.child == "split" else None
                    ),
                ),
            )
            assert result is not None
            print(
                json.dumps({"seconds": time.perf_counter() - started, "result": result})
            )
            return
        sqs = wired.sqs
        url = sqs.get_queue_url(QueueName=wired.settings.batch_shard_queue)["QueueUrl"]
        deliveries = []
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < arguments.idle_seconds:
            messages = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=1
            ).get("Messages", [])
            for message in messages:
                started = time.perf_counter()
                result = shard.process_shard(
                    message["Body"],
                    BatchRuntime(
                        s3=wired.batch_s3,
                        predictor=predictor,
                        settings=wired.settings,
                        seconds_left=lambda: LAMBDA_SECONDS,
                    ),
                    attempt=1,
                )
                seconds = time.perf_counter() - started
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                deliveries.append(
                    {
                        "seconds": seconds,
                        "action": result["action"],
                        "index": result.get("index"),
                    }
                )
                idle_since = time.monotonic()
        print(json.dumps({"deliveries": deliveries}))


def start_child(endpoint: str, *options: str) -> subprocess.Popen[str]:
    environment = aws_environment(endpoint)
    environment["TMPDIR"] = "/dev/shm"
    return subprocess.Popen(
        [sys.executable, "-m", "bench.fanout", *options],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def result_of(child: subprocess.Popen[str]) -> dict[str, Any]:
    stdout, stderr = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"{child.args!r} failed:\n{stderr[-3000:]}")
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return result


# -- the runs ----------------------------------------------------------------------


def digest(s3: Any, key: str) -> str:
    """sha256 of an object, streamed."""
    body = s3.get_object(Bucket=BATCH_BUCKET, Key=key)["Body"]
    hashed = hashlib.sha256()
    for block in iter(lambda: body.read(8 * 2**20), b""):
        hashed.update(block)
    return hashed.hexdigest()


def run(rows: int, shard_bytes: int, workers: Sequence[int]) -> dict[str, Any]:
    server = start_moto(log=Path(tempfile.gettempdir()) / "bench-fanout-moto.log")
    try:
        s3, sqs = s3_client(server.url), sqs_client(server.url)
        register_iris(s3)
        settings = stage_settings()
        create_shard_queue(
            sqs, settings.batch_shard_queue, attempts=settings.batch_shard_attempts
        )
        upload_csv(s3, SOURCE, rows)
        size = s3.head_object(Bucket=BATCH_BUCKET, Key=SOURCE)["ContentLength"]
        common = ["--shard-bytes", str(shard_bytes)]

        def copy(name: str) -> str:
            key = f"incoming/iris@1/{name}.csv"
            s3.copy_object(
                Bucket=BATCH_BUCKET,
                Key=key,
                CopySource={"Bucket": BATCH_BUCKET, "Key": SOURCE},
            )
            return key

        single_key = copy("single")
        single = result_of(
            start_child(server.url, "--child", "single", "--key", single_key, *common)
        )
        expected = digest(s3, single_key.replace("incoming/", "outgoing/") + ".out")
        report: dict[str, Any] = {
            "rows": rows,
            "bytes": size,
            "shard_bytes": shard_bytes,
            "single_seconds": single["seconds"],
            "fanned": [],
        }
        print(
            f"one invocation: {single['seconds']:.1f} s, "
            f"{rows / single['seconds']:,.0f} rows/s",
            flush=True,
        )
        for count in workers:
            key = copy(f"fanned-{count}")
            split = result_of(
                start_child(server.url, "--child", "split", "--key", key, *common)
            )
            pumps = [
                start_child(server.url, "--child", "worker", *common)
                for _ in range(count)
            ]
            deliveries = [
                delivery for pump in pumps for delivery in result_of(pump)["deliveries"]
            ]
            manifest = json.loads(
                s3.get_object(
                    Bucket=BATCH_BUCKET,
                    Key=keys.record_key(key),
                )["Body"].read()
            )
            identical = digest(s3, manifest["output"]["key"]) == expected
            report["fanned"].append(
                summarise(count, split, deliveries, manifest, identical, single)
            )
            print(json.dumps(report["fanned"][-1]), flush=True)
        return report
    finally:
        server.stop()


IDLE_SECONDS = 3.0


def summarise(
    workers: int,
    split: dict[str, Any],
    deliveries: list[dict[str, Any]],
    manifest: dict[str, Any],
    identical: bool,
    single: dict[str, Any],
) -> dict[str, Any]:
    """One fanned-out run: its time (the manifest's, from the split's claim to
    the final manifest: worker start-up included, like Lambda's cold starts), and
    the per-shard costs."""
    assert manifest["status"] == "succeeded", manifest
    seconds = manifest["seconds"]
    shards = manifest["shards"]
    rows = manifest["rows"]["read"]
    rate = rows / single["seconds"]  # rows/s of one invocation
    by_shard_seconds = sum(shard["seconds"] for shard in shards)
    fixed = [shard["seconds"] - shard["counts"]["read"] / rate for shard in shards]
    assembled = next(d for d in deliveries if d["action"] == "assembled")
    own = shards[assembled["index"]]["seconds"]
    return {
        "workers": workers,
        "shards": len(shards),
        "seconds": round(seconds, 2),
        "rows_per_second": round(rows / seconds),
        "speedup_vs_single": round(single["seconds"] / seconds, 2),
        "split_seconds": round(split["seconds"], 3),
        "split_per_shard_ms": round(1000 * split["seconds"] / len(shards), 1),
        "shard_seconds_total": round(by_shard_seconds, 2),
        "shard_fixed_ms_median": round(1000 * sorted(fixed)[len(fixed) // 2], 1),
        "assembly_seconds": round(assembled["seconds"] - own, 2),
        "byte_identical": identical,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--shard-bytes", type=int, default=24 * 2**20)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--child", choices=("single", "split", "worker"))
    parser.add_argument("--key", default="", help=argparse.SUPPRESS)
    parser.add_argument(
        "--idle-seconds", type=float, default=IDLE_SECONDS, help=argparse.SUPPRESS
    )
    arguments = parser.parse_args(argv)
    if arguments.child:
        child_main(arguments)
        return 0
    workers = [int(value) for value in arguments.workers.split(",")]
    report = run(arguments.rows, arguments.shard_bytes, workers)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
