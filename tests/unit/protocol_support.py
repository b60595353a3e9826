"""What the protocol tests share: iris's signature, manifests to decode against,
and the message of a refusal. No I/O."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.errors import InvalidInputError
from chalicelib.registry.manifest import Manifest, Signature, TensorSpec

IRIS = Signature(
    inputs=(TensorSpec("float_input", "FP32", (-1, 4)),),
    outputs=(
        TensorSpec("label", "INT64", (-1,)),
        TensorSpec("probabilities", "FP32", (-1, 3)),
    ),
)
LABELS = ("setosa", "versicolor", "virginica")


def manifest(
    signature: Signature = IRIS,
    *,
    labels: tuple[str, ...] | None = LABELS,
    tags: dict[str, str] | None = None,
) -> Manifest:
    return Manifest(
        name="m",
        version=3,
        sha256="0" * 64,
        size=1,
        created_at="2024-01-01T00:00:00.000Z",
        signature=signature,
        labels=labels,
        tags=tags or {},
    )


def one_input(datatype: str, shape: tuple[int, ...] = (-1, 2)) -> Manifest:
    return manifest(
        Signature(
            inputs=(TensorSpec("x", datatype, shape),),
            outputs=(TensorSpec("y", "FP32", (-1, 1)),),
        ),
        labels=None,
    )


def refusal(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(InvalidInputError) as caught:
        call(*args, **kwargs)
    return caught.value.message
