"""``make bench-report``: ``turnout report`` over 1M captured requests and 500k
labels, and over a day at 1,000 requests/s read from summaries only.

Everything lives on a moto server in its own process (its memory is not ours):

- **Raw**: iris@prod split 1=50 2=50, both versions with a training baseline;
  1,000,000 captured requests in 100 capture objects of 10,000 (four features,
  the predicted class), each with its summary as capture writes it, and 500,000
  labels (every other request, a fifth of them by the caller's own id) in 10
  feedback objects. The report merges the summaries and streams the records for
  the join, decoding only the lines a label names. The floor, in the same run: a
  bare loop that downloads and gunzips the same objects and counts their lines.
- **Summaries**: iris@day, a day at 1,000 requests/s (86.4M requests) captured in
  objects of 10,000 requests (one per 10 s, 8,640 of them), each with its
  ``.summary.json``; no labels, so the report reads the summaries only.

Each measurement is a fresh child process; its peak memory is its VmHWM. Targets:
the raw report at most 30 s and 256 MB; the day in seconds.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.batch import peak_rss_bytes, reset_peak_rss
from chalicelib.aliases.store import AliasStore
from chalicelib.capture import capture_key
from chalicelib.capture_summary import summarise, summary_key
from chalicelib.evidence.baseline import compute_baseline
from chalicelib.registry.versions import Registry
from tools.devstack.clients import aws_environment, s3_client
from tools.devstack.processes import start_moto
from tools.devstack.seed import create_buckets
from tools.devstack.stage import ROOT
from turnout.report.compute import baseline_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MODEL_BUCKET = "turnout-models-bench"
CAPTURE_BUCKET = "turnout-capture-bench"
RAW_START = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
DAY_START = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
REQUESTS = 1_000_000
PER_OBJECT = 10_000
LABELS_PER_OBJECT = 50_000
DAY_REQUESTS_PER_SECOND = 1_000
DAY_OBJECT_SECONDS = 10
CENTRES = np.array([[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.6, 2.0]])
TARGET_SECONDS, TARGET_MIB = 30.0, 256.0


def iris_rows(random_source: np.random.Generator, count: int) -> tuple[Any, Any]:
    """``count`` iris-like rows and their true classes."""
    classes = random_source.integers(0, 3, count)
    rows = CENTRES[classes] + random_source.normal(0, 0.3, (count, 4))
    return rows.round(2), classes


def set_up_registry(s3: S3Client) -> None:
    registry = Registry(s3, MODEL_BUCKET)
    for name in ("iris-v1.onnx", "iris-v2.onnx"):
        registry.register("iris", (ROOT / "models" / name).read_bytes())
    aliases = AliasStore(registry)
    for alias in ("prod", "day"):
        aliases.set_routing("iris", alias, {1: 50, 2: 50}, actor="bench")
    training, classes = iris_rows(np.random.default_rng(1), 5000)
    baseline = compute_baseline(
        training, [f"float_input_{i}" for i in range(4)], ["numeric"] * 4, classes
    )
    for version in (1, 2):
        s3.put_object(
            Bucket=MODEL_BUCKET,
            Key=baseline_key("iris", version),
            Body=json.dumps(baseline.to_json()).encode(),
        )


def generate_raw(s3: S3Client) -> int:
    """1M captured requests and 500k labels; returns the bytes uploaded."""
    source = np.random.default_rng(2)
    uploaded = 0
    labels: list[str] = []
    received = RAW_START + timedelta(hours=23)
    for start in range(0, REQUESTS, PER_OBJECT):
        rows, truth = iris_rows(source, PER_OBJECT)
        versions = source.integers(1, 3, PER_OBJECT)
        # Version 2 is right 95 % of the time, version 1 80 %.
        right = source.random(PER_OBJECT) < np.where(versions == 2, 0.95, 0.8)
        predicted = np.where(right, truth, (truth + 1) % 3)
        latencies = source.lognormal(2.0, 0.3, PER_OBJECT).round(3)
        lines = []
        first = RAW_START + timedelta(seconds=start * 0.08)
        for offset in range(PER_OBJECT):
            index = start + offset
            at = first + timedelta(seconds=offset * 0.08)
            caller = f', "caller_id": "c{index}"' if index % 10 == 0 else ""
            lines.append(
                f'{{"request_id": "r{index:09d}", "time": "{at.isoformat()}", '
                f'"model": "iris", "version": {versions[offset]}, "alias": "prod", '
                f'"latency_ms": {latencies[offset]}, "routing_key_hash": null{caller}, '
                f'"inputs": {{"float_input": [{rows[offset].tolist()}]}}, '
                f'"outputs": {{"label": [{predicted[offset]}]}}}}\n'
            )
            if index % 2 == 0:
                identity = f"c{index}" if caller else f"r{index:09d}"
                labels.append(
                    f'{{"id": "{identity}", "label": {truth[offset]}, '
                    f'"received_at": "{received.isoformat()}", "source": "rest"}}\n'
                )
        body = gzip.compress("".join(lines).encode(), compresslevel=1)
        key = capture_key("iris", "prod", first.timestamp(), f"bench{start:07d}")
        s3.put_object(Bucket=CAPTURE_BUCKET, Key=key, Body=body)
        # As capture writes it: the object's summary next to it.
        summary = json.dumps(summarise(json.loads(line) for line in lines)).encode()
        s3.put_object(Bucket=CAPTURE_BUCKET, Key=summary_key(key), Body=summary)
        uploaded += len(body) + len(summary)
    for part, start in enumerate(range(0, len(labels), LABELS_PER_OBJECT)):
        body = gzip.compress(
            "".join(labels[start : start + LABELS_PER_OBJECT]).encode(),
            compresslevel=1,
        )
        key = f"feedback/iris/{received:%Y/%m/%d/%H}/{received:%Y%m%dT%H%M%S}-{part}"
        s3.put_object(Bucket=CAPTURE_BUCKET, Key=key + ".jsonl.gz", Body=body)
        uploaded += len(body)
    return uploaded


def generate_day(s3: S3Client) -> int:
    """A day at 1,000 requests/s as capture objects of 10 s, each with its summary
    (the objects themselves are stand-ins: the report reads only the summaries)."""
    source = np.random.default_rng(3)
    rows, truth = iris_rows(source, 2000)
    records = [
        {
            "version": 1 + index % 2,
            "time": "",
            "latency_ms": float(source.lognormal(2.0, 0.3)),
            "inputs": {"float_input": [rows[index].tolist()]},
            "outputs": {"label": [int(truth[index])]},
        }
        for index in range(2000)
    ]
    template = summarise(records)
    scale = DAY_REQUESTS_PER_SECOND * DAY_OBJECT_SECONDS // 2000
    scaled = json.loads(json.dumps(template))
    for entry in scaled["versions"].values():
        _scale(entry, scale)
    objects = 24 * 3600 // DAY_OBJECT_SECONDS

    def put(index: int) -> int:
        at = DAY_START + timedelta(seconds=index * DAY_OBJECT_SECONDS)
        hour = f"{at:%Y-%m-%dT%H}"
        versions = {
            version: entry | {"hours": {hour: entry["requests"]}}
            for version, entry in scaled["versions"].items()
        }
        key = capture_key("iris", "day", at.timestamp(), f"day{index:05d}")
        document = json.dumps(scaled | {"versions": versions}).encode()
        s3.put_object(Bucket=CAPTURE_BUCKET, Key=key, Body=b"")
        s3.put_object(Bucket=CAPTURE_BUCKET, Key=summary_key(key), Body=document)
        return len(document)

    with ThreadPoolExecutor(8) as pool:
        return sum(pool.map(put, range(objects)))


def _scale(entry: dict[str, Any], factor: int) -> None:
    for key, value in entry.items():
        if isinstance(value, dict):
            _scale(value, factor)
        elif isinstance(value, int):
            entry[key] = value * factor


# -- the measurements, each in a child ------------------------------------------------


def child_main(case: str, endpoint: str) -> None:
    s3 = s3_client(endpoint)
    reset_peak_rss()
    started = time.perf_counter()
    result: dict[str, Any] = {}
    if case == "floor":
        lines = 0
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=CAPTURE_BUCKET)
        for page in pages:
            for item in page.get("Contents", []):
                key = item["Key"]
                if key.endswith(".jsonl.gz") and "/day/" not in key:
                    body = s3.get_object(Bucket=CAPTURE_BUCKET, Key=key)["Body"]
                    with gzip.GzipFile(fileobj=body) as stream:
                        lines += sum(1 for _ in stream)
        result["lines"] = lines
    else:
        from turnout.report.compute import compute_report

        alias, start = ("prod", RAW_START) if case == "raw" else ("day", DAY_START)
        found = compute_report(
            s3,
            model_bucket=MODEL_BUCKET,
            capture_bucket=CAPTURE_BUCKET,
            model="iris",
            alias=alias,
            since=start,
            until=start + timedelta(days=1),
        )
        result["requests"] = sum(entry["requests"] for entry in found["versions"])
        result["labelled"] = sum(entry["labelled"] for entry in found["versions"])
        result["verdict"] = [c["verdict"] for c in found["comparisons"]]
    result["seconds"] = time.perf_counter() - started
    used = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_seconds"] = used.ru_utime + used.ru_stime
    result["peak_mib"] = peak_rss_bytes() / 2**20
    print(json.dumps(result))


def run_child(case: str, endpoint: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.report", "--case", case, "--endpoint", endpoint],
        cwd=ROOT,
        env=aws_environment(endpoint),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{case} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("floor", "raw", "day"))
    parser.add_argument("--endpoint")
    arguments = parser.parse_args(argv)
    if arguments.case:
        child_main(arguments.case, arguments.endpoint)
        return 0
    random.seed(0)
    server = start_moto(log=Path(tempfile.gettempdir()) / "bench-report-moto.log")
    try:
        s3 = s3_client(server.url)
        create_buckets(s3, MODEL_BUCKET, CAPTURE_BUCKET)
        set_up_registry(s3)
        started = time.perf_counter()
        raw_bytes = generate_raw(s3)
        raw_seconds = time.perf_counter() - started
        started = time.perf_counter()
        day_bytes = generate_day(s3)
        day_seconds = time.perf_counter() - started
        print(
            f"generated: 1M requests and 500k labels ({raw_bytes / 2**20:.0f} MiB "
            f"gzip) in {raw_seconds:.0f} s; a day of summaries "
            f"({day_bytes / 2**20:.0f} MiB) in {day_seconds:.0f} s",
            flush=True,
        )
        floor = run_child("floor", server.url)
        raw = run_child("raw", server.url)
        day = run_child("day", server.url)
    finally:
        server.stop()
    print()
    print("| measure | floor | turnout report | ratio | target |")
    print("|---|---:|---:|---:|---|")
    print(
        f"| 1M requests, 500k labels: time | {floor['seconds']:.1f} s | "
        f"{raw['seconds']:.1f} s | {raw['seconds'] / floor['seconds']:.1f} | "
        f"<= {TARGET_SECONDS:.0f} s |"
    )
    print(
        f"| 1M requests, 500k labels: peak memory | {floor['peak_mib']:.0f} MiB | "
        f"{raw['peak_mib']:.0f} MiB | {raw['peak_mib'] / floor['peak_mib']:.1f} | "
        f"<= {TARGET_MIB:.0f} MiB |"
    )
    print(
        f"| 1M requests, 500k labels: CPU time | {floor['cpu_seconds']:.1f} s | "
        f"{raw['cpu_seconds']:.1f} s | "
        f"{raw['cpu_seconds'] / floor['cpu_seconds']:.1f} | |"
    )
    print(
        f"| a day at 1,000 req/s ({day['requests'] / 1e6:.1f}M), summaries: time | "
        f"| {day['seconds']:.1f} s | | seconds |"
    )
    print(
        "| a day at 1,000 req/s, summaries: CPU time | | "
        f"{day['cpu_seconds']:.1f} s | | |"
    )
    print(
        f"| a day at 1,000 req/s, summaries: peak memory | | "
        f"{day['peak_mib']:.0f} MiB | | |"
    )
    print()
    print(f"raw: {raw['requests']} requests, {raw['labelled']} labelled")
    for verdict in raw["verdict"]:
        print(f"  {verdict}")
    passed = raw["seconds"] <= TARGET_SECONDS and raw["peak_mib"] <= TARGET_MIB
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
