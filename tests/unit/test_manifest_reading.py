"""A stored manifest that is not what the registry wrote is an integrity failure."""

from __future__ import annotations

import json

import pytest

from chalicelib.errors import ModelIntegrityError
from chalicelib.registry.manifest import Manifest, Signature, TensorSpec, read_manifest

MANIFEST = Manifest(
    name="iris",
    version=2,
    sha256="ab" * 32,
    size=690,
    created_at="2026-03-01T12:00:00.000Z",
    signature=Signature(
        inputs=(TensorSpec("float_input", "FP32", (-1, 4)),),
        outputs=(TensorSpec("label", "INT64", (-1,)),),
    ),
)
STORED = MANIFEST.to_dict()


def test_a_stored_manifest_reads_back() -> None:
    assert read_manifest("iris", 2, json.dumps(STORED).encode()) == MANIFEST


@pytest.mark.parametrize(
    ("stored", "reason"),
    [
        (json.dumps(STORED).encode()[:-20], "is not valid JSON"),
        (b"\xff\xfe", "is not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "is not valid JSON"),
        (b"[1, 2]", "is not a JSON object"),
        (json.dumps({**STORED, "sha256": None} | {"size": "x"}).encode(),
         "has a field of the wrong type"),
        (json.dumps({k: v for k, v in STORED.items() if k != "inputs"}).encode(),
         "has no 'inputs' field"),
        (json.dumps({**STORED, "inputs": [{"name": "x"}]}).encode(),
         "has no 'datatype' field"),
        (json.dumps({**STORED, "inputs": 7}).encode(),
         "has a field of the wrong type"),
        (json.dumps({**STORED, "tags": []}).encode(), "has a field of the wrong type"),
        (json.dumps({**STORED, "version": 1}).encode(),
         "describes version 1 of 'iris'"),
    ],
)  # fmt: skip
def test_a_corrupt_manifest_is_an_integrity_failure(stored: bytes, reason: str) -> None:
    with pytest.raises(ModelIntegrityError) as caught:
        read_manifest("iris", 2, stored)
    assert str(caught.value) == (
        f"version 2 of 'iris' failed its integrity check: manifest.json {reason}"
    )
