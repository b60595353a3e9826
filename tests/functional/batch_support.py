"""The batch functions through ``chalice.test`` on moto: the files the tests
upload, what the outputs must hold (from onnxruntime directly), and a ``Batch``
to upload, deliver events and read what came out."""

from __future__ import annotations

import functools
import gzip
import json
from collections import ChainMap
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

import numpy as np
import onnxruntime
import pytest
from chalice.test import Client

from app import app
from chalicelib import wiring
from chalicelib.batch import job, keys
from chalicelib.batch.runtime import BatchRuntime
from chalicelib.config import Settings
from chalicelib.predictor import Predictor
from chalicelib.sessions import open_session
from tests.demo_support import BATCH_BUCKET, MODELS, ROOT

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

LABELS = ("setosa", "versicolor", "virginica")
HEADER = "sepal_length,sepal_width,petal_length,petal_width,id"
PREDICTION_COLUMNS = [
    "label",
    "probability_setosa",
    "probability_versicolor",
    "probability_virginica",
]


def function_environment(
    function: str = "handle_batch_upload", stage: str = "dev"
) -> dict[str, str]:
    """The variables ``.chalice/config.json`` gives the deployed ``function`` of
    ``stage`` beyond its stage's (the batch function of dev by default)."""
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    functions = config["stages"][stage]["lambda_functions"]
    environment: dict[str, str] = functions[function].get("environment_variables", {})
    return environment


@functools.cache
def session(filename: str) -> onnxruntime.InferenceSession:
    """A session as the batch function opens it: onnxruntime's results can differ
    in the last bit with the number of threads."""
    threads = Settings.from_env(function_environment()).session_threads
    return open_session(str(MODELS / filename), threads=threads)


def iris_cells(version: int, rows: list[list[float]]) -> list[list[str]]:
    """The prediction cells the batch output must hold, from onnxruntime directly."""
    labels, probabilities = session(f"iris-v{version}.onnx").run(
        None, {"float_input": np.array(rows, np.float32)}
    )
    return [
        [LABELS[int(label)], *(f"{float(p):.6f}" for p in row)]
        for label, row in zip(labels, probabilities, strict=True)
    ]


def iris_rows(count: int, seed: int = 0) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    return np.round(rng.uniform(0.1, 7.9, size=(count, 4)), 1).tolist()  # type: ignore[no-any-return]


def csv_text(rows: list[list[float]], header: str = HEADER) -> str:
    lines = [header] + [
        ",".join([*map(str, row), f"id-{i}"]) for i, row in enumerate(rows)
    ]
    return "\n".join(lines) + "\n"


def expected_csv(version: int, rows: list[list[float]], header: str = HEADER) -> str:
    cells = iris_cells(version, rows)
    lines = [",".join([header, *PREDICTION_COLUMNS])]
    for i, (row, predicted) in enumerate(zip(rows, cells, strict=True)):
        lines.append(",".join([*map(str, row), f"id-{i}", *predicted]))
    return "\n".join(lines) + "\n"


class Batch:
    """The app's batch function on a moto bucket, with helpers to upload, deliver
    events and read what came out."""

    def __init__(self, s3: S3Client, client: Client) -> None:
        self.s3 = s3
        self.client = client

    def upload(self, key: str, body: bytes | str) -> str:
        data = body.encode() if isinstance(body, str) else body
        return self.s3.put_object(Bucket=BATCH_BUCKET, Key=key, Body=data)["ETag"]

    def event(self, key: str) -> dict[str, Any]:
        """An S3 event as S3 sends it: the key URL-encoded, spaces as '+'."""
        return self.client.events.generate_s3_event(
            bucket=BATCH_BUCKET, key=quote_plus(key, safe="/")
        )

    def deliver(self, key: str) -> dict[str, Any]:
        response = self.client.lambda_.invoke("handle_batch_upload", self.event(key))
        payload: dict[str, Any] = response.payload
        return payload

    def run(self, key: str, body: bytes | str) -> dict[str, Any]:
        """Upload ``body`` at ``key``, deliver its event; the manifest written."""
        self.upload(key, body)
        self.deliver(key)
        return self.manifest(key)

    def read(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=BATCH_BUCKET, Key=key)["Body"].read()

    def manifest(self, key: str) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(
            self.read(self.base(key) + ".manifest.json")
        )
        return document

    def output(self, key: str) -> str:
        data = self.read(self.base(key) + ".out")
        return (gzip.decompress(data) if key.endswith(".gz") else data).decode()

    def errors(self, key: str) -> list[dict[str, Any]]:
        data = self.read(self.base(key) + ".errors.jsonl")
        return [json.loads(line) for line in data.splitlines()]

    def stored(self) -> set[str]:
        listing = self.s3.list_objects_v2(Bucket=BATCH_BUCKET)
        return {item["Key"] for item in listing.get("Contents", [])}

    def uploads_in_progress(self) -> list[str]:
        listing = self.s3.list_multipart_uploads(Bucket=BATCH_BUCKET)
        return [item["Key"] for item in listing.get("Uploads", [])]

    def head(self, key: str) -> dict[str, Any]:
        response: dict[str, Any] = dict(
            self.s3.head_object(Bucket=BATCH_BUCKET, Key=key)
        )
        return response

    @staticmethod
    def base(key: str) -> str:
        return keys.outputs_base(key)


@contextmanager
def batch_functions(
    settings_changes: MutableMapping[str, Any],
    tmp_path: Path,
    **collaborators: Any,
) -> Iterator[Client]:
    """The app's functions on the dev stage through ``chalice.test``, on a fresh
    container with its model cache in ``tmp_path`` and ``collaborators`` (an SQS
    client...) in place of its own.

    The stage's environment wins over the test's own, so ``settings_changes``
    change the settings themselves; a live view: a test may change it before the
    first invocation.
    """
    cache = {"model_cache_dir": str(tmp_path / "models")}
    overrides = ChainMap(settings_changes, cache)
    wiring.install(wiring.Container(overrides=overrides, **collaborators))
    with Client(app, stage_name="dev", project_dir=str(ROOT)) as client:
        yield client
    wiring.reset()


def count_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the rows of every prediction the core runs."""
    runs: list[int] = []
    run = Predictor.run

    def counted(self: Predictor, target: Any, inputs: Any, **options: Any) -> Any:
        runs.append(len(next(iter(inputs.values()))))
        return run(self, target, inputs, **options)

    monkeypatch.setattr(Predictor, "run", counted)
    return runs


def process(batch: Batch, key: str, **options: Any) -> dict[str, Any] | None:
    """The batch function without the Lambda runtime around it, with 900 s to
    live: what ``job.process_upload`` returns."""
    arguments: dict[str, Any] = {
        "s3": batch.s3,
        "predictor": wiring.predictor(),
        "settings": wiring.settings(),
        "seconds_left": lambda: 900.0,
        **options,
    }
    return job.process_upload(BATCH_BUCKET, key, BatchRuntime(**arguments))
