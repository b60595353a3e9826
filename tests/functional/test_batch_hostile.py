"""Hostile batch files against the batch function in a child process whose memory
is capped at the function's size: each ends in a final manifest, within its time
limit, with a peak memory that does not grow with the file.

Each kind of file comes in two sizes, the larger four times the smaller (or
more): the peak above the resident memory before the job must stay the same
within ``FLAT_MIB``, which a buffer that grows with the file would exceed. The
files live in a moto server (another process), so that the child's memory is the
job's alone. Sizes are scaled down from the issue's reports (gigabytes): the
ratios are what proves flatness.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from chalicelib.registry.versions import Registry
from tests.demo_support import BATCH_BUCKET, MODEL_BUCKET, MODELS, ROOT
from tests.functional.batch_support import HEADER, function_environment
from tools.devstack.clients import aws_environment, s3_client
from tools.devstack.processes import start_moto
from tools.devstack.seed import create_buckets

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# A moto server and capped child processes: slow, so out of the edit loop.
pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
# The batch function's memory (.chalice/config.json) and a short time limit.
FUNCTION_MEMORY_MB = 3008
SECONDS = 2.0
# How much later than its time limit a job may end (its last writes; a busy host).
LATE_SECONDS = 1.5
FLAT_MIB = 32.0
ROW = b"5.1,3.5,1.4,0.2,a\n"


def gzip_stream(pieces: Iterator[bytes]) -> bytes:
    """One gzip member of the pieces, compressed as they come (no big buffer)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    return b"".join([*(deflate.compress(piece) for piece in pieces), deflate.flush()])


def repeated(piece: bytes, total: int) -> Iterator[bytes]:
    block = piece * max(1, MIB // len(piece))
    for _ in range(max(1, total // len(block))):
        yield block


def zeros(total: int) -> bytes:
    return gzip_stream(repeated(bytes(MIB), total))


def rows(total: int) -> bytes:
    return gzip_stream(iter([HEADER.encode() + b"\n", *repeated(ROW, total)]))


def empty_members(count: int) -> bytes:
    return (
        gzip.compress(HEADER.encode() + b"\n")
        + gzip.compress(b"") * count
        + gzip.compress(ROW * 10)
    )


def unclosed_quote(total: int) -> bytes:
    return HEADER.encode() + b'\n1,2,3,4,"x\n' + ROW * (total // len(ROW))


def huge_header(total: int) -> bytes:
    columns = b",".join(b"c%07d" % i for i in range(total // 9))
    return columns + b"\n" + ROW


def huge_line(total: int) -> bytes:
    return HEADER.encode() + b"\n" + b"1," * (total // 2)


RECORD_TOO_LONG = "a record is longer than 8388608 bytes (no line end found"
HEADER_TOO_LONG = (
    "the header line is longer than 1048576 bytes: a CSV file starts with a line "
    "of column names"
)
CASES: dict[str, tuple[str, bytes, bytes, str | None]] = {
    # name: (file name, smaller, larger, the failure expected, None: time or none)
    "gzip bomb of zeros": (
        "zeros.csv.gz",
        zeros(64 * MIB),
        zeros(512 * MIB),
        HEADER_TOO_LONG,
    ),
    "valid rows at a high ratio": (
        "rows.csv.gz",
        rows(8 * MIB),
        rows(128 * MIB),
        None,
    ),
    "empty gzip members": (
        "hollow.csv.gz",
        empty_members(100_000),
        empty_members(1_000_000),
        None,
    ),
    "unclosed quote then rows": (
        "quote.csv",
        unclosed_quote(12 * MIB),
        unclosed_quote(48 * MIB),
        RECORD_TOO_LONG + ": a quoted field is not closed)",
    ),
    "huge header": (
        "header.csv",
        huge_header(4 * MIB),
        huge_header(16 * MIB),
        HEADER_TOO_LONG,
    ),
    "one huge line without newline": (
        "line.csv",
        huge_line(12 * MIB),
        huge_line(48 * MIB),
        RECORD_TOO_LONG + ")",
    ),
}


@pytest.fixture(scope="module")
def moto_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, S3Client]]:
    """A moto server with both buckets and iris version 1 registered."""
    server = start_moto(log=tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        s3 = s3_client(server.url)
        create_buckets(s3, MODEL_BUCKET, BATCH_BUCKET)
        Registry(s3, MODEL_BUCKET, max_model_bytes=64 * MIB).register(
            "iris", (MODELS / "iris-v1.onnx").read_bytes()
        )
        s3.put_object(
            Bucket=BATCH_BUCKET,
            Key="incoming/iris@1/warmup.csv",
            Body=HEADER.encode() + b"\n" + ROW,
        )
        yield server.url, s3
    finally:
        server.stop()


def run_child(endpoint_url: str, keys: list[str], model_cache: str) -> list[Any]:
    """Process ``keys`` in a capped child; its JSON lines, the first its mapping."""
    environment = aws_environment(endpoint_url)
    environment.update(
        {
            "PYTHONPATH": str(ROOT),
            "TURNOUT_MODEL_BUCKET": MODEL_BUCKET,
            "TURNOUT_BATCH_BUCKET": BATCH_BUCKET,
            "TURNOUT_MODEL_CACHE_DIR": model_cache,
            **function_environment(),
        }
    )
    plan = {
        "warmup": "incoming/iris@1/warmup.csv",
        "memory_mb": FUNCTION_MEMORY_MB,
        "seconds": SECONDS,
        "keys": keys,
    }
    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.functional.hostile_batch_child",
            json.dumps(plan),
        ],
        env=environment,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr[-4000:]
    return [json.loads(line) for line in child.stdout.splitlines()]


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_file_ends_in_time_with_flat_memory(
    moto_server: tuple[str, S3Client], case: str, tmp_path: Any
) -> None:
    endpoint_url, s3 = moto_server
    name, smaller, larger, failure = CASES[case]
    keys = [f"incoming/iris@1/small-{name}", f"incoming/iris@1/large-{name}"]
    for key, body in zip(keys, (smaller, larger), strict=True):
        s3.put_object(Bucket=BATCH_BUCKET, Key=key, Body=body)

    mapping, *results = run_child(endpoint_url, keys, str(tmp_path / "models"))

    print(case, mapping, results)  # the figures, for docs/batch.md (pytest -s)
    for result in results:
        assert result["raised"] is None
        assert result["status"] in {"succeeded", "partial", "failed"}
        assert result["seconds"] <= SECONDS + LATE_SECONDS
        if failure is not None:
            assert (result["status"], result["error"]) == ("failed", failure)
    small, large = (result["peak_mib"] for result in results)
    assert large <= small + FLAT_MIB, (small, large)
