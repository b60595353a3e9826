"""The model registry: immutable, checksummed versions in an S3 bucket.

Layout (one prefix per model)::

    models/{name}/versions/{version}/claim.json     the version number, taken
    models/{name}/versions/{version}/model.onnx     the artifact
    models/{name}/versions/{version}/manifest.json  the commit point, written last

A registration claims the next number with a conditional write (``IfNoneMatch``),
so two concurrent registrations get two numbers, then writes the artifact, then
the manifest. Only versions with a manifest exist for anyone: a crash midway
leaves a claimed number that nobody can list or route to. Claims are never
deleted, so a number is never given twice, even after its version is deleted.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from chalicelib.errors import (
    InvalidLabelsError,
    ModelIntegrityError,
    ModelNotFoundError,
    ModelTooLargeError,
    VersionNotFoundError,
)
from chalicelib.manifest import Manifest, Signature, classifier_outputs
from chalicelib.models import inspect_model, sha256_hex
from chalicelib.names import validate_model_name

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MODELS_PREFIX = "models/"
LABELS_METADATA_KEY = "turnout.labels"
_MAX_CLAIM_ATTEMPTS = 100


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso_timestamp(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def version_prefix(name: str, version: int) -> str:
    return f"{MODELS_PREFIX}{name}/versions/{version}/"


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def is_precondition_failure(error: ClientError) -> bool:
    """True for a lost conditional write (412, or 409 when S3 saw a race)."""
    return error_code(error) in {
        "PreconditionFailed",
        "412",
        "ConditionalRequestConflict",
        "409",
    }


def is_missing(error: ClientError) -> bool:
    return error_code(error) in {"NoSuchKey", "404", "NotFound"}


class Registry:
    """Register, list, describe and fetch model versions in ``bucket``."""

    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        *,
        max_model_bytes: int = 512 * 1024 * 1024,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.max_model_bytes = max_model_bytes
        self._clock = clock

    # -- writing ---------------------------------------------------------------

    def register(
        self,
        name: str,
        data: bytes,
        *,
        description: str = "",
        tags: dict[str, str] | None = None,
        labels: list[str] | None = None,
    ) -> Manifest:
        """Store ``data`` as the next version of ``name`` and return its manifest.

        Refuses, writing nothing: an invalid name (InvalidNameError), a file over
        the size limit (ModelTooLargeError), a file onnxruntime cannot load
        (InvalidModelError), labels that do not fit the model (InvalidLabelsError).
        """
        validate_model_name(name)
        if len(data) > self.max_model_bytes:
            raise ModelTooLargeError(len(data), self.max_model_bytes)
        info = inspect_model(data)
        if labels is None and info.metadata.get(LABELS_METADATA_KEY):
            labels = info.metadata[LABELS_METADATA_KEY].split(",")
        if labels is not None:
            labels = _check_labels(labels, info.signature)
        version = self._claim_next_version(name)
        manifest = Manifest(
            name=name,
            version=version,
            sha256=sha256_hex(data),
            size=len(data),
            created_at=iso_timestamp(self._clock()),
            signature=info.signature,
            description=description,
            tags=dict(tags or {}),
            labels=tuple(labels) if labels is not None else None,
            opset=info.opset,
            producer=info.producer,
            ir_version=info.ir_version,
        )
        prefix = version_prefix(name, version)
        self.s3.put_object(
            Bucket=self.bucket,
            Key=prefix + "model.onnx",
            Body=data,
            IfNoneMatch="*",
            ChecksumSHA256=_base64_sha256(data),
            ContentType="application/octet-stream",
        )
        self.s3.put_object(
            Bucket=self.bucket,
            Key=prefix + "manifest.json",
            Body=json.dumps(manifest.to_dict(), indent=2).encode(),
            IfNoneMatch="*",
            ContentType="application/json",
        )
        return manifest

    def _claim_next_version(self, name: str) -> int:
        version = max(self._claimed_versions(name), default=0) + 1
        for _ in range(_MAX_CLAIM_ATTEMPTS):
            try:
                self.s3.put_object(
                    Bucket=self.bucket,
                    Key=version_prefix(name, version) + "claim.json",
                    Body=json.dumps({"claimed_at": iso_timestamp(self._clock())}),
                    IfNoneMatch="*",
                )
                return version
            except ClientError as error:
                if not is_precondition_failure(error):
                    raise
                version += 1
        raise RuntimeError(
            f"could not claim a version of {name!r}: too much contention"
        )

    def remove_version(self, name: str, version: int) -> None:
        """Delete a version's manifest (uncommitting it) and then its artifact.

        Callers check first that no alias routes to it (``AliasStore.delete_version``).
        The claim stays, so the number is never reused.
        """
        self.get_manifest(name, version)
        prefix = version_prefix(name, version)
        for leaf in ("manifest.json", "model.onnx"):
            self.s3.delete_object(Bucket=self.bucket, Key=prefix + leaf)

    # -- reading ---------------------------------------------------------------

    def _keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys

    def _subfolders(self, prefix: str) -> list[str]:
        names: list[str] = []
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(
            Bucket=self.bucket, Prefix=prefix, Delimiter="/"
        ):
            for common in page.get("CommonPrefixes", []):
                names.append(common["Prefix"][len(prefix) :].rstrip("/"))
        return names

    def _claimed_versions(self, name: str) -> list[int]:
        folders = self._subfolders(f"{MODELS_PREFIX}{name}/versions/")
        return [int(folder) for folder in folders if folder.isdigit()]

    def list_versions(self, name: str) -> list[int]:
        """Committed versions of ``name``, ascending; empty if there are none."""
        validate_model_name(name)
        prefix = f"{MODELS_PREFIX}{name}/versions/"
        versions = []
        for key in self._keys(prefix):
            folder, _, leaf = key[len(prefix) :].partition("/")
            if leaf == "manifest.json" and folder.isdigit():
                versions.append(int(folder))
        return sorted(versions)

    def list_models(self) -> list[str]:
        """Names of the models with at least one committed version, sorted."""
        return sorted(
            name for name in self._subfolders(MODELS_PREFIX) if self.list_versions(name)
        )

    def get_manifest(self, name: str, version: int) -> Manifest:
        """The manifest of a committed version, else VersionNotFoundError.

        ModelNotFoundError when the model has no version at all.
        """
        validate_model_name(name)
        try:
            response = self.s3.get_object(
                Bucket=self.bucket, Key=version_prefix(name, version) + "manifest.json"
            )
        except ClientError as error:
            if not is_missing(error):
                raise
            if not self.list_versions(name):
                raise ModelNotFoundError(name) from None
            raise VersionNotFoundError(name, version) from None
        return read_manifest(name, version, response["Body"].read())

    def latest_manifest(self, name: str) -> Manifest:
        versions = self.list_versions(name)
        if not versions:
            raise ModelNotFoundError(name)
        return self.get_manifest(name, versions[-1])

    def fetch_artifact(self, manifest: Manifest) -> bytes:
        """The artifact's bytes as stored: verify them before use (verify_artifact)."""
        try:
            response = self.s3.get_object(
                Bucket=self.bucket,
                Key=version_prefix(manifest.name, manifest.version) + "model.onnx",
            )
        except ClientError as error:
            if is_missing(error):
                raise VersionNotFoundError(manifest.name, manifest.version) from None
            raise
        return response["Body"].read()


def read_manifest(name: str, version: int, stored: bytes) -> Manifest:
    """The manifest in ``stored``; ModelIntegrityError when it is not valid JSON,
    lacks a field, has one of the wrong type, or describes another version."""

    def corrupt(reason: str) -> ModelIntegrityError:
        return ModelIntegrityError(name, version, f"manifest.json {reason}")

    try:
        data = json.loads(stored)
    except (ValueError, RecursionError):
        raise corrupt("is not valid JSON") from None
    if not isinstance(data, dict):
        raise corrupt("is not a JSON object")
    try:
        manifest = Manifest.from_dict(data)
    except KeyError as error:
        raise corrupt(f"has no {error} field") from None
    except (TypeError, ValueError, AttributeError):
        raise corrupt("has a field of the wrong type") from None
    if (manifest.name, manifest.version) != (name, version):
        raise corrupt(f"describes version {manifest.version} of {manifest.name!r}")
    return manifest


def _base64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _check_labels(labels: list[str], signature: Signature) -> list[str]:
    labels = [label.strip() for label in labels]
    if not labels or any(not label for label in labels):
        raise InvalidLabelsError("labels must be a non-empty list of non-empty names")
    if len(set(labels)) != len(labels):
        raise InvalidLabelsError("labels must be distinct")
    outputs = classifier_outputs(signature)
    if outputs is None:
        raise InvalidLabelsError(
            "labels were given but the model has no probabilities output "
            "(a 2-D float tensor) to name"
        )
    classes = outputs.probabilities.shape[-1]
    if classes > 0 and classes != len(labels):
        raise InvalidLabelsError(
            f"{len(labels)} labels given, the model's "
            f"{outputs.probabilities.name!r} output has {classes} classes"
        )
    return labels
