"""REST and batch take the same values: the same rows through
``/models/{name}/predict`` and through a CSV and a JSON Lines file, for every
datatype and its edge values, are accepted or refused alike."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from chalice.test import Client

from chalicelib.aliases.store import AliasStore
from chalicelib.batch import keys
from chalicelib.registry.versions import Registry
from tests.demo_support import BATCH_BUCKET
from tests.functional.onnx_support import identity_model
from tests.functional.rest_support import serving_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

FLOAT_EDGES = [
    "1.5",
    "-0.0",
    "2",
    "1e-50",
    "65504",
    "70000",
    "3.4028235e38",
    "1e39",
    "1e308",
    "1e400",
    "1" + "0" * 400,
    "NaN",
    "Infinity",
    "-Infinity",
    "true",
    '"abc"',
    "null",
]
INTEGER_EDGES = [
    "2",
    "2.0",
    "1e3",
    "2.5",
    "-1",
    "127",
    "128",
    "-129",
    "255",
    "256",
    "32768",
    "65536",
    "2147483648",
    "4294967296",
    "9007199254740993",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "NaN",
    "Infinity",
    "true",
    '"two"',
    "null",
]
BOOL_EDGES = ["true", "false", "1", "0", "1.0", '"yes"', "null"]
# A CSV cell has no type: "1" is a number to a numeric input and text to a BYTES
# input. So numeric inputs are sent no numeric strings, BYTES inputs no numbers.
BYTES_EDGES = ['"a"', '""', '"1"', '"true"', '"\\u00e9, \\"quoted\\""']

# What each datatype takes among its edge values: the golden table all three
# paths are checked against.
ACCEPTED = {
    "FP16": ["1.5", "-0.0", "2", "1e-50", "65504"],
    "FP32": ["1.5", "-0.0", "2", "1e-50", "65504", "70000", "3.4028235e38"],
    "FP64": [
        "1.5",
        "-0.0",
        "2",
        "1e-50",
        "65504",
        "70000",
        "3.4028235e38",
        "1e39",
        "1e308",
    ],
    "INT8": ["2", "2.0", "-1", "127"],
    "UINT8": ["2", "2.0", "127", "128", "255"],
    "INT16": ["2", "2.0", "1e3", "-1", "127", "128", "-129", "255", "256"],
    "INT64": [
        "2",
        "2.0",
        "1e3",
        "-1",
        "127",
        "128",
        "-129",
        "255",
        "256",
        "32768",
        "65536",
        "2147483648",
        "4294967296",
        "9007199254740993",
        "9223372036854775807",
    ],
    "UINT64": [
        "2",
        "2.0",
        "1e3",
        "127",
        "128",
        "255",
        "256",
        "32768",
        "65536",
        "2147483648",
        "4294967296",
        "9007199254740993",
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
    ],
    "BOOL": ["true", "false"],
    "BYTES": BYTES_EDGES,
}
NON_FINITE = ["1e400", "NaN", "Infinity", "-Infinity"]
GOOD = {"BOOL": "true", "BYTES": '"a"'}
CASES = [
    ("FP16", False),
    ("FP32", False),
    ("FP64", False),
    ("FP32", True),
    ("FP16", True),
    ("INT8", False),
    ("UINT8", False),
    ("INT16", False),
    ("INT64", False),
    ("UINT64", False),
    ("BOOL", False),
    ("BYTES", False),
]


def edges(datatype: str) -> list[str]:
    if datatype.startswith("FP"):
        return FLOAT_EDGES
    if datatype == "BOOL":
        return BOOL_EDGES
    if datatype == "BYTES":
        return BYTES_EDGES
    return INTEGER_EDGES


def csv_cell(token: str) -> str:
    """The CSV cell for a JSON token: its text for a number or a literal, the
    string's own text (quoted as needed) for a string, empty for null."""
    value = json.loads(token)
    if isinstance(value, str):
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow([value])
        return out.getvalue()
    return "" if value is None else token


@pytest.fixture
def client(request: pytest.FixtureRequest) -> Iterator[Client]:
    # chalice.test gives the batch function 3 s: stop 0.5 s before, not 20 s.
    yield from serving_client(request, batch_safety_seconds=0.5)


def rest_accepts(client: Client, name: str, row: str) -> bool:
    response = client.http.post(
        f"/models/{name}/predict",
        body=f'{{"instances": [{row}]}}'.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code in (200, 400), response.body
    return response.status_code == 200


def batch_accepts(
    client: Client, s3: S3Client, key: str, body: str, rows: int
) -> list[bool]:
    s3.put_object(Bucket=BATCH_BUCKET, Key=key, Body=body.encode())
    event = client.events.generate_s3_event(bucket=BATCH_BUCKET, key=key)
    client.lambda_.invoke("handle_batch_upload", event)
    manifest = json.loads(
        s3.get_object(Bucket=BATCH_BUCKET, Key=keys.record_key(key))["Body"].read()
    )
    assert manifest["rows"]["read"] == rows, manifest
    if manifest["rows"]["rejected"] == 0:
        return [True] * rows
    report = s3.get_object(Bucket=BATCH_BUCKET, Key=keys.errors_key(key))
    rejected = {json.loads(line)["row"] for line in report["Body"].read().splitlines()}
    return [row not in rejected for row in range(1, rows + 1)]


@pytest.mark.parametrize(("datatype", "allow"), CASES)
def test_rest_csv_and_json_lines_accept_and_refuse_the_same_values(
    client: Client,
    registry: Registry,
    aliases: AliasStore,
    s3: S3Client,
    datatype: str,
    allow: bool,
) -> None:
    name = f"agree-{datatype.lower()}"
    tags = {"turnout.non_finite": "allow"} if allow else {}
    registry.register(name, identity_model(datatype, 2), tags=tags)
    aliases.set_routing(name, "prod", {1: 100}, actor="tests")
    good = GOOD.get(datatype, "2")
    tokens = edges(datatype)

    by_rest = [rest_accepts(client, name, f"[{good}, {token}]") for token in tokens]
    jsonl = "".join(f"[{good}, {token}]\n" for token in tokens)
    by_jsonl = batch_accepts(
        client, s3, f"incoming/{name}@1/rows.jsonl", jsonl, len(tokens)
    )
    rows = [f"{csv_cell(good)},{csv_cell(token)}\n" for token in tokens]
    by_csv = batch_accepts(
        client,
        s3,
        f"incoming/{name}@1/rows.csv",
        "x_0,x_1\n" + "".join(rows),
        len(tokens),
    )

    expected = ACCEPTED[datatype] + (NON_FINITE if allow else [])
    verdicts = {"rest": by_rest, "jsonl": by_jsonl, "csv": by_csv}
    for path, accepted in verdicts.items():
        taken = [token for token, ok in zip(tokens, accepted, strict=True) if ok]
        assert taken == [token for token in tokens if token in expected], path
