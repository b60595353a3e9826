"""Models and helpers the batch table tests share: signatures, their manifests and
features (pure)."""

from __future__ import annotations

from chalicelib.batch.tables.columns import features_of
from chalicelib.registry.manifest import Manifest, Signature, TensorSpec

IRIS = Signature(
    inputs=(TensorSpec("float_input", "FP32", (-1, 4)),),
    outputs=(
        TensorSpec("label", "INT64", (-1,)),
        TensorSpec("probabilities", "FP32", (-1, 3)),
    ),
)
LABELS = ("setosa", "versicolor", "virginica")
MIXED = Signature(
    inputs=(
        TensorSpec("x", "FP64", (-1, 2)),
        TensorSpec("n", "INT8", (-1,)),
        TensorSpec("flag", "BOOL", (-1, 1)),
    ),
    outputs=(TensorSpec("y", "FP32", (-1, 1)),),
)
TEXT = Signature(
    inputs=(TensorSpec("text", "BYTES", (-1, 1)),),
    outputs=(TensorSpec("score", "FP32", (-1,)),),
)


def manifest(signature: Signature, labels: tuple[str, ...] | None = None) -> Manifest:
    return Manifest(
        "m", 1, "0" * 64, 1, "2026-01-01T00:00:00.000Z", signature, labels=labels
    )


IRIS_FEATURES = features_of(manifest(IRIS))
MIXED_FEATURES = features_of(manifest(MIXED))

NOT_A_NUMBER = "not a number, model expects FP32"
NOT_FINITE = "not a finite number; this model does not take NaN or Infinity"
