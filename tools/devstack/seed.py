"""The demo registry ``make dev`` starts with: the stage's buckets, the models of
``models/`` registered through ``chalicelib.registry``, and aliases on them."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chalicelib.aliases.store import AliasStore
from chalicelib.registry.versions import Registry
from tools.devstack.stage import ROOT

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@dataclass(frozen=True)
class DemoModel:
    name: str
    filename: str
    description: str


DEMO_MODELS = (
    DemoModel("iris", "iris-v1.onnx", "logistic regression"),
    DemoModel("iris", "iris-v2.onnx", "gradient boosting"),
    DemoModel("diabetes", "diabetes.onnx", "gradient boosting regressor"),
)
DEMO_ALIASES: tuple[tuple[str, str, dict[int, float]], ...] = (
    ("iris", "prod", {1: 90, 2: 10}),
    ("iris", "staging", {2: 100}),
    ("diabetes", "prod", {1: 100}),
)


def create_buckets(s3: S3Client, *buckets: str) -> None:
    """Create the buckets (a bucket that already exists is kept as it is)."""
    for bucket in buckets:
        with contextlib.suppress(
            s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists
        ):
            s3.create_bucket(Bucket=bucket)


def seed_registry(
    registry: Registry,
    models_dir: Path = ROOT / "models",
    *,
    actor: str = "make dev",
) -> AliasStore:
    """Register ``DEMO_MODELS`` (in order: iris 1 and 2, diabetes 1) and set
    ``DEMO_ALIASES``; returns the alias store over ``registry``."""
    for model in DEMO_MODELS:
        registry.register(
            model.name,
            (models_dir / model.filename).read_bytes(),
            description=model.description,
        )
    aliases = AliasStore(registry)
    for name, alias, weights in DEMO_ALIASES:
        aliases.set_routing(name, alias, weights, actor=actor, reason="demo alias")
    return aliases
