"""Large models: external data files, loading from a file, and the refusals of a
model too large for the function's /tmp or memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from chalice.test import Client

from chalicelib.aliases.store import AliasStore
from chalicelib.errors import InvalidModelError, ModelDoesNotFitError
from chalicelib.model_files import ArtifactFiles
from chalicelib.registry.deletion import delete_version
from chalicelib.registry.manifest import DataFile, Manifest
from chalicelib.registry.versions import Registry
from chalicelib.sessions import ModelCache, open_session, sha256_file, signature_of
from models.generated import WEIGHTS_FILE, matmul_chain
from tests.demo_support import MODEL_BUCKET, ROOT, artifact_files
from tests.functional.rest_support import post_json, serving_client, v2_request

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MIB = 1024 * 1024
WIDTH = 64
WEIGHTS_KEY = f"models/chain/versions/1/data/{WEIGHTS_FILE}"


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    """model.onnx, 4 MatMuls of 64 x 64 weights, in weights.bin beside it."""
    return matmul_chain(
        tmp_path / "chain", 4 * WIDTH * WIDTH * 4, external=True, dimension=WIDTH
    )


@pytest.fixture
def chain_manifest(registry: Registry, chain: Path) -> Manifest:
    return registry.register_file("chain", str(chain))


def keys(s3: S3Client) -> list[str]:
    listing = s3.list_objects_v2(Bucket=MODEL_BUCKET, Prefix="models/chain/")
    return sorted(item["Key"] for item in listing.get("Contents", []))


def test_external_data_files_are_stored_beside_the_model_and_checksummed(
    registry: Registry, s3: S3Client, chain: Path, chain_manifest: Manifest
) -> None:
    weights = chain.parent / WEIGHTS_FILE
    assert chain_manifest.data_files == (
        DataFile(WEIGHTS_FILE, sha256_file(str(weights)), 4 * WIDTH * WIDTH * 4),
    )
    assert chain_manifest.size == chain.stat().st_size
    assert chain_manifest.total_size == chain.stat().st_size + weights.stat().st_size
    assert keys(s3) == [
        "models/chain/versions/1/claim.json",
        WEIGHTS_KEY,
        "models/chain/versions/1/manifest.json",
        "models/chain/versions/1/model.onnx",
    ]
    stored = s3.get_object(Bucket=MODEL_BUCKET, Key=WEIGHTS_KEY)["Body"].read()
    assert stored == weights.read_bytes()
    assert registry.get_manifest("chain", 1) == chain_manifest


def test_a_single_file_manifest_has_no_data_files_field(
    demo_registry: Registry,
) -> None:
    manifest = demo_registry.get_manifest("iris", 1)
    assert manifest.data_files == ()
    assert "data_files" not in manifest.to_dict()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {},
            "not a loadable ONNX model: the model references external data file "
            "'weights.bin', not given",
        ),
        (
            {WEIGHTS_FILE: WEIGHTS_FILE, "notes.txt": WEIGHTS_FILE},
            "not a loadable ONNX model: external data file 'notes.txt' was given but "
            "the model does not reference it",
        ),
    ],
)
def test_data_files_must_be_exactly_those_the_model_references(
    registry: Registry,
    s3: S3Client,
    chain: Path,
    given: dict[str, str],
    message: str,
) -> None:
    data_files = {name: str(chain.parent / path) for name, path in given.items()}
    with pytest.raises(InvalidModelError) as caught:
        registry.register("chain", chain.read_bytes(), data_files=data_files)
    assert str(caught.value) == message
    assert keys(s3) == []


def test_a_data_file_outside_the_models_folder_is_refused(
    registry: Registry, s3: S3Client, tmp_path: Path
) -> None:
    chain = matmul_chain(tmp_path, WIDTH * WIDTH * 4, external=True, dimension=WIDTH)
    data = chain.read_bytes().replace(b"weights.bin", b"../weights1")
    with pytest.raises(InvalidModelError) as caught:
        registry.register("chain", data, data_files={"../weights1": str(chain)})
    assert str(caught.value) == (
        "not a loadable ONNX model: external data file '../weights1' must be a plain "
        "file name other than 'model.onnx', beside the model"
    )
    assert keys(s3) == []


def test_deleting_a_version_removes_its_data_files(
    aliases: AliasStore, s3: S3Client, chain_manifest: Manifest
) -> None:
    delete_version(aliases, "chain", 1, actor="tests")
    assert keys(s3) == [
        "models/chain/versions/1/claim.json",
        "models/chain/versions/1/deleted.json",
    ]


def test_an_external_data_model_is_kept_as_a_folder_and_reopened_from_it(
    registry: Registry, chain_manifest: Manifest, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    models = ModelCache(
        registry.open_artifact,
        artifact_files(cache_dir),
        10**9,
        fetch_data_file=registry.open_data_file,
    )
    models.get(chain_manifest)
    folder = cache_dir / f"{chain_manifest.sha256}.model"
    assert sorted(path.name for path in cache_dir.iterdir()) == [folder.name]
    assert sorted(path.name for path in folder.iterdir()) == [
        "model.onnx",
        WEIGHTS_FILE,
    ]
    files = ArtifactFiles(str(cache_dir), 10**9)  # a new process, same /tmp
    assert files.names() == [chain_manifest.sha256]
    reopened = ModelCache(lambda _: b"", files, 10**9).get(chain_manifest)
    assert signature_of(reopened.session) == chain_manifest.signature


# -- through the REST function -----------------------------------------------------


@pytest.fixture
def client(
    request: pytest.FixtureRequest, chain_manifest: Manifest
) -> Iterator[Client]:
    # chain_manifest first: registered before the client replaces the
    # registry's model inspection with its demo-model memo.
    yield from serving_client(request)


def chain_request() -> dict[str, object]:
    return {
        "inputs": [
            {
                "name": "x",
                "shape": [1, WIDTH],
                "datatype": "FP32",
                "data": [0.5] * WIDTH,
            }
        ]
    }


def test_an_external_data_model_answers_what_onnxruntime_answers(
    client: Client, chain: Path
) -> None:
    response = post_json(client, "/v2/models/chain/versions/1/infer", chain_request())
    assert response.status_code == 200
    (output,) = response.json_body["outputs"]
    (expected,) = open_session(str(chain)).run(
        None, {"x": np.full((1, WIDTH), 0.5, dtype=np.float32)}
    )
    assert (output["name"], output["shape"]) == ("y", [1, WIDTH])
    assert output["data"] == expected.ravel().tolist()


def test_a_tampered_data_file_is_503_for_that_version_only(
    client: Client,
    registry: Registry,
    s3: S3Client,
    chain: Path,
    chain_manifest: Manifest,
    tmp_path: Path,
) -> None:
    weights = bytearray((chain.parent / WEIGHTS_FILE).read_bytes())
    weights[len(weights) // 2] ^= 0x01
    s3.put_object(Bucket=MODEL_BUCKET, Key=WEIGHTS_KEY, Body=bytes(weights))
    tampered = sha256_file_of(bytes(weights), tmp_path)
    (data_file,) = chain_manifest.data_files
    response = post_json(client, "/v2/models/chain/versions/1/infer", chain_request())
    assert (response.status_code, response.json_body) == (
        503,
        {
            "error": "version 1 of 'chain' failed its integrity check: data file "
            f"'weights.bin' sha256 is {tampered}, manifest says {data_file.sha256}"
        },
    )
    rows = [[5.1, 3.5, 1.4, 0.2]]
    iris = post_json(client, "/v2/models/iris/versions/1/infer", v2_request(rows))
    assert iris.status_code == 200
    # Nothing of the refused version is left in /tmp: iris's file alone.
    iris_file = f"{registry.get_manifest('iris', 1).sha256}.onnx"
    assert [path.name for path in (tmp_path / "models").iterdir()] == [iris_file]


def sha256_file_of(data: bytes, folder: Path) -> str:
    path = folder / "copy"
    path.write_bytes(data)
    return sha256_file(str(path))


@pytest.fixture
def one_mib_tmp_client(
    request: pytest.FixtureRequest, s3: S3Client, tmp_path: Path
) -> Iterator[Client]:
    """A client on a function with 1 MiB of /tmp, and a 1.5 MiB model."""
    registry = Registry(s3, MODEL_BUCKET, max_model_bytes=8 * MIB)
    chain = matmul_chain(
        tmp_path / "big", 6 * 256 * 256 * 4, external=False, dimension=256
    )
    registry.register_file("chain", str(chain))
    yield from serving_client(request, ephemeral_storage_mb=1)


def test_a_model_larger_than_tmp_is_503_naming_the_figures(
    one_mib_tmp_client: Client, tmp_path: Path
) -> None:
    body = {
        "inputs": [
            {"name": "x", "shape": [1, 256], "datatype": "FP32", "data": [0.0] * 256}
        ]
    }
    response = post_json(one_mib_tmp_client, "/v2/models/chain/versions/1/infer", body)
    assert (response.status_code, response.json_body) == (
        503,
        {
            "error": "version 1 of 'chain' cannot be served: its files are 1.5 MiB, "
            "over the function's /tmp of 1.0 MiB (TURNOUT_EPHEMERAL_STORAGE_MB): "
            "raise the stage's ephemeral storage"
        },
    )
    assert not (tmp_path / "models").exists()


# -- the refusals and the memory bound, in the cache -------------------------------


class NoFetch:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, manifest: Manifest) -> bytes:
        self.calls += 1
        raise AssertionError("refused models are not downloaded")


def test_files_larger_than_tmp_are_refused_before_any_download(
    demo_registry: Registry, tmp_path: Path
) -> None:
    big = replace(demo_registry.get_manifest("iris", 1), size=600 * MIB)
    fetch = NoFetch()
    models = ModelCache(fetch, artifact_files(tmp_path), 10**12, tmp_bytes=512 * MIB)
    with pytest.raises(ModelDoesNotFitError) as caught:
        models.get(big)
    assert str(caught.value) == (
        "version 1 of 'iris' cannot be served: its files are 600.0 MiB, over the "
        "function's /tmp of 512.0 MiB (TURNOUT_EPHEMERAL_STORAGE_MB): raise the "
        "stage's ephemeral storage"
    )
    assert fetch.calls == 0
    assert list(tmp_path.iterdir()) == []


def test_a_model_that_would_not_fit_in_memory_is_refused_before_any_download(
    demo_registry: Registry, tmp_path: Path
) -> None:
    big = replace(demo_registry.get_manifest("iris", 1), size=1024 * MIB)
    fetch = NoFetch()
    models = ModelCache(
        fetch, artifact_files(tmp_path), 10**12, memory_bytes=1024 * MIB
    )
    with pytest.raises(ModelDoesNotFitError) as caught:
        models.get(big)
    assert str(caught.value) == (
        "version 1 of 'iris' cannot be served: loading its 1,024.0 MiB takes about "
        "1,280.0 MiB of memory, over the function's 1,024.0 MiB: raise the stage's "
        "lambda_memory_size"
    )
    assert fetch.calls == 0


def test_sessions_make_room_in_memory_before_a_model_loads(
    demo_registry: Registry, tmp_path: Path
) -> None:
    iris1 = demo_registry.get_manifest("iris", 1)
    iris2 = demo_registry.get_manifest("iris", 2)
    diabetes = demo_registry.get_manifest("diabetes", 1)
    memory = iris1.size + iris2.size + diabetes.size * 5 // 4 - 1
    models = ModelCache(
        demo_registry.fetch_artifact,
        artifact_files(tmp_path),
        10**9,
        memory_bytes=memory,
    )
    models.get(iris1)
    models.get(iris2)
    assert models.cached() == [("iris", 1), ("iris", 2)]
    models.get(diabetes)  # beside both it would not fit: iris 1 goes first
    assert models.cached() == [("iris", 2), ("diabetes", 1)]


# -- peak memory, in a child process -------------------------------------------------


def load_in_child(how: str, model: Path, manifest: Manifest, cache: Path) -> float:
    manifest_file = model.parent / "manifest.json"
    manifest_file.write_text(json.dumps(manifest.to_dict()))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.functional.large_model_child",
            how,
            str(model),
            str(manifest_file),
            str(cache),
        ],
        cwd=ROOT,
        # As the REST function runs (.chalice/config.json): without it, glibc's
        # moving mmap threshold makes the peak vary from run to run.
        env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ratio: float = json.loads(done.stdout)["ratio"]
    print(f"{how}: {ratio:.2f}x the model")
    return ratio


def test_loading_from_the_file_takes_at_most_one_and_a_half_times_the_model(
    tmp_path: Path,
) -> None:
    model = matmul_chain(tmp_path / "model", 48 * MIB, external=False, dimension=1024)
    session = open_session(str(model))
    manifest = Manifest(
        name="chain",
        version=1,
        sha256=sha256_file(str(model)),
        size=model.stat().st_size,
        created_at="",
        signature=signature_of(session),
    )
    del session
    from_file = load_in_child("file", model, manifest, tmp_path / "cache")
    from_bytes = load_in_child("bytes", model, manifest, tmp_path / "cache")
    assert from_file <= 1.5, f"from the file: {from_file:.2f}x the model"
    # The measurement tells the two apart: the bytes themselves are one more copy.
    assert from_bytes > from_file + 0.8, (from_bytes, from_file)
