"""The checkout's paths, the dev stage's buckets as ``chalice.test`` sees them,
and the demo models: what tests of every kind share besides fixtures."""

from __future__ import annotations

from pathlib import Path

from chalicelib.model_files import ArtifactFiles

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
MODEL_BUCKET = "turnout-models-dev"  # the dev stage's, as chalice.test sees it
BATCH_BUCKET = "turnout-batch-dev"


def model_bytes(filename: str) -> bytes:
    """A demo model from models/ (iris-v1.onnx, iris-v2.onnx, diabetes.onnx)."""
    return (MODELS / filename).read_bytes()


def artifact_files(directory: Path, max_bytes: int = 10**9) -> ArtifactFiles:
    """A model file cache in ``directory`` (a test's tmp_path), bounded generously."""
    return ArtifactFiles(str(directory), max_bytes)
