"""Per-container wiring: settings, the S3 client and the predictor, built lazily
once and kept while the container is warm. Tests call ``reset()`` to start over."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from chalicelib.aliases import AliasCache
from chalicelib.config import Settings
from chalicelib.models import ArtifactFiles, ModelCache
from chalicelib.predict import Predictor
from chalicelib.registry import ManifestCache, Registry

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@functools.cache
def settings() -> Settings:
    return Settings.from_env()


@functools.cache
def s3_client() -> S3Client:
    """One S3 client per container; honours AWS_ENDPOINT_URL (moto locally)."""
    import boto3

    return boto3.client("s3")


@functools.cache
def batch_s3_client() -> S3Client:
    """The batch function's S3 client: like ``s3_client`` but without the SDK's
    own checksum on every request and response. Batch jobs move gigabytes; TLS
    already protects them in transit and S3 checksums what it stores, while the
    SDK's CRC32 (and the chunked encoding it uploads with) costs the function
    CPU it needs for predicting."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        config=Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


@functools.cache
def registry() -> Registry:
    config = settings()
    return Registry(
        s3_client(), config.model_bucket, max_model_bytes=config.max_model_bytes
    )


@functools.cache
def predictor() -> Predictor:
    config = settings()
    store = registry()
    return Predictor(
        store,
        AliasCache(s3_client(), config.model_bucket, config.alias_cache_seconds),
        ManifestCache(store, config.manifest_cache_seconds),
        ModelCache(
            store.fetch_artifact,
            ArtifactFiles(config.model_cache_dir, config.model_file_cache_bytes),
            config.session_cache_bytes,
            threads=config.session_threads,
            failure_seconds=config.integrity_failure_seconds,
        ),
        default_alias=config.default_alias,
    )


def reset() -> None:
    """Forget everything built so far (the next call reads the environment again)."""
    for factory in (settings, s3_client, batch_s3_client, registry, predictor):
        factory.cache_clear()
