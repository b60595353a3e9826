"""Model versions: immutable, checksummed, numbered, in an S3 bucket.

A registration claims the next number with a conditional write (``IfNoneMatch``),
so two concurrent registrations get two numbers, then writes the artifact, then
the manifest. Only versions with a manifest exist for anyone: a crash midway
leaves a claimed number that nobody can list or route to. Claims are never
deleted, so a number is never given twice, even after its version is deleted.
A version with a tombstone does not exist, whatever of it is left: deleting one
(``chalicelib.registry.deletion``) writes the tombstone first. The keys are in
``chalicelib.layout``.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO

from botocore.exceptions import ClientError

from chalicelib import layout
from chalicelib.clock import iso_timestamp, utc_now
from chalicelib.documents import JsonDocuments, is_missing, is_precondition_failure
from chalicelib.errors import (
    BaselineExistsError,
    DocumentConflictError,
    InvalidLabelsError,
    InvalidModelError,
    ModelIntegrityError,
    ModelNotFoundError,
    ModelTooLargeError,
    VersionNotFoundError,
)
from chalicelib.evidence.baseline import Baseline, InvalidBaselineError
from chalicelib.model_files import MODEL_FILE
from chalicelib.model_header import external_data_locations
from chalicelib.names import validate_model_name
from chalicelib.registry.manifest import (
    DataFile,
    Manifest,
    Signature,
    classifier_outputs,
    read_manifest,
)
from chalicelib.sessions import ModelInfo, inspect_model, sha256_file, sha256_hex

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import PutObjectRequestTypeDef

LABELS_METADATA_KEY = "turnout.labels"
_MAX_CLAIM_ATTEMPTS = 100


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
        self.documents = JsonDocuments(s3, bucket)
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
        baseline: Baseline | None = None,
        provenance: dict[str, Any] | None = None,
        data_files: Mapping[str, str] | None = None,
    ) -> Manifest:
        """Store ``data`` as the next version of ``name`` and return its manifest.

        ``baseline`` (the training sample's statistics) is stored with the version,
        before the manifest, whose ``baseline_sha256`` names it; ``provenance``
        (where the version came from) is kept in the manifest as given.
        ``data_files``: the external data files ``data`` references (ONNX
        external data, for models over protobuf's 2 GB), each file name mapped to
        the local path it is read from; stored beside the model and checksummed
        in the manifest.

        Refuses, writing nothing: an invalid name (InvalidNameError), files over
        the size limit together (ModelTooLargeError), a model onnxruntime cannot
        load or whose external data files are not exactly those given
        (InvalidModelError), labels that do not fit the model (InvalidLabelsError).
        """
        return self._register(
            name,
            data,
            None,
            dict(data_files or {}),
            description=description,
            tags=tags,
            labels=labels,
            baseline=baseline,
            provenance=provenance,
        )

    def register_file(
        self,
        name: str,
        path: str,
        *,
        description: str = "",
        tags: dict[str, str] | None = None,
        labels: list[str] | None = None,
        baseline: Baseline | None = None,
        provenance: dict[str, Any] | None = None,
    ) -> Manifest:
        """``register`` the ONNX file at ``path``, with the external data files it
        references read from beside it (where onnxruntime itself looks)."""
        with open(path, "rb") as file:
            data = file.read()
        folder = os.path.dirname(os.path.abspath(path))
        return self._register(
            name,
            data,
            path,
            {
                location: os.path.join(folder, location)
                for location in external_data_locations(data)
            },
            description=description,
            tags=tags,
            labels=labels,
            baseline=baseline,
            provenance=provenance,
        )

    def _register(
        self,
        name: str,
        data: bytes,
        path: str | None,
        data_files: dict[str, str],
        *,
        description: str,
        tags: dict[str, str] | None,
        labels: list[str] | None,
        baseline: Baseline | None,
        provenance: dict[str, Any] | None,
    ) -> Manifest:
        """``register``; ``path``, when given, is a file holding ``data`` with its
        data files beside it, where onnxruntime can load them."""
        validate_model_name(name)
        _check_data_files(external_data_locations(data), data_files)
        sizes = {
            file_name: os.path.getsize(path) for file_name, path in data_files.items()
        }
        total = len(data) + sum(sizes.values())
        if total > self.max_model_bytes:
            raise ModelTooLargeError(total, self.max_model_bytes)
        # From the path only with data files: onnxruntime's errors from a path
        # name it, and those from bytes are the ones users already know.
        if path is not None and data_files:
            info = inspect_model(data, path)
        else:
            info = _inspect(data, data_files)
        if labels is None and info.metadata.get(LABELS_METADATA_KEY):
            labels = info.metadata[LABELS_METADATA_KEY].split(",")
        if labels is not None:
            labels = _check_labels(labels, info.signature)
        stored_files = tuple(
            DataFile(file_name, sha256_file(path), sizes[file_name])
            for file_name, path in data_files.items()
        )
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
            data_files=stored_files,
            provenance=dict(provenance or {}),
            baseline_sha256=(
                None if baseline is None else sha256_hex(_baseline_bytes(baseline))
            ),
        )
        self._put(layout.artifact_key(name, version), data, manifest.sha256)
        for data_file in stored_files:
            with open(data_files[data_file.name], "rb") as body:
                # Not conditional: the claimed number already makes the prefix
                # ours, and a PUT of gigabytes that botocore retries after a
                # timeout must not fail on its own first attempt.
                self._put(
                    layout.data_file_key(name, version, data_file.name),
                    body,
                    data_file.sha256,
                    if_none_match=False,
                )
        if baseline is not None:
            self._write_baseline(name, version, baseline)
        self.documents.write(
            layout.manifest_key(name, version), manifest.to_dict(), etag=None
        )
        return manifest

    def set_baseline(self, name: str, version: int, baseline: Baseline) -> None:
        """Give a committed version the baseline it was registered without.

        Set once: BaselineExistsError when the version has one (stored with it or
        set before); VersionNotFoundError for a version that does not exist.
        """
        self.get_manifest(name, version)
        self._write_baseline(name, version, baseline)

    def get_baseline(self, name: str, version: int) -> Baseline | None:
        """The version's baseline, None when it has none. ModelIntegrityError when
        the stored document does not match the sha256 its manifest recorded or is
        not a valid baseline."""
        manifest = self.get_manifest(name, version)
        try:
            response = self.s3.get_object(
                Bucket=self.bucket, Key=layout.baseline_key(name, version)
            )
        except ClientError as error:
            if not is_missing(error):
                raise
            if manifest.baseline_sha256 is not None:
                raise ModelIntegrityError(
                    name, version, "baseline.json is missing"
                ) from None
            return None
        stored: bytes = response["Body"].read()
        expected = manifest.baseline_sha256
        if expected is not None and sha256_hex(stored) != expected:
            raise ModelIntegrityError(
                name, version, "baseline.json does not match its sha256"
            )
        try:
            return Baseline.from_json(json.loads(stored))
        except (ValueError, InvalidBaselineError) as error:
            raise ModelIntegrityError(
                name, version, f"baseline.json is not valid: {error}"
            ) from None

    def _write_baseline(self, name: str, version: int, baseline: Baseline) -> None:
        try:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=layout.baseline_key(name, version),
                Body=_baseline_bytes(baseline),
                IfNoneMatch="*",
                ContentType="application/json",
            )
        except ClientError as error:
            if is_precondition_failure(error):
                raise BaselineExistsError(name, version) from None
            raise

    def _put(
        self,
        key: str,
        body: bytes | BinaryIO,
        sha256: str,
        *,
        if_none_match: bool = True,
    ) -> None:
        """Write a new object (that must not exist yet, unless not
        ``if_none_match``), S3 checking its sha256."""
        request: PutObjectRequestTypeDef = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": body,
            "ChecksumSHA256": base64.b64encode(bytes.fromhex(sha256)).decode(),
            "ContentType": "application/octet-stream",
        }
        if if_none_match:
            request["IfNoneMatch"] = "*"
        self.s3.put_object(**request)

    def _claim_next_version(self, name: str) -> int:
        version = max(self._claimed_versions(name), default=0) + 1
        for _ in range(_MAX_CLAIM_ATTEMPTS):
            try:
                self.documents.write(
                    layout.claim_key(name, version),
                    {"claimed_at": iso_timestamp(self._clock())},
                    etag=None,
                )
                return version
            except DocumentConflictError:
                version += 1
        raise RuntimeError(
            f"could not claim a version of {name!r}: too much contention"
        )

    def write_tombstone(self, name: str, version: int, *, actor: str) -> None:
        """Mark a committed version deleted: from now on nobody can route to it,
        and warm containers stop serving it (ManifestCache). The first step of a
        deletion (``chalicelib.registry.deletion``)."""
        self.get_manifest(name, version)
        self.s3.put_object(
            Bucket=self.bucket,
            Key=layout.tombstone_key(name, version),
            Body=json.dumps(
                {"deleted_at": iso_timestamp(self._clock()), "actor": actor}
            ).encode(),
            ContentType="application/json",
        )

    def remove_tombstone(self, name: str, version: int) -> None:
        """Undo ``write_tombstone`` for a deletion that was refused."""
        self.s3.delete_object(
            Bucket=self.bucket, Key=layout.tombstone_key(name, version)
        )

    def remove_version(self, name: str, version: int) -> None:
        """Delete a tombstoned version's manifest and artifact. The claim and the
        tombstone stay, so the number is never reused."""
        for key in (
            layout.manifest_key(name, version),
            layout.artifact_key(name, version),
            *self._keys(layout.data_files_prefix(name, version)),
        ):
            self.s3.delete_object(Bucket=self.bucket, Key=key)

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
        folders = self._subfolders(layout.versions_prefix(name))
        return [int(folder) for folder in folders if folder.isdigit()]

    def list_versions(self, name: str) -> list[int]:
        """Committed versions of ``name`` that are not deleted, ascending; empty if
        there are none."""
        validate_model_name(name)
        prefix = layout.versions_prefix(name)
        leaves: dict[str, set[str]] = {}
        for key in self._keys(prefix):
            folder, _, leaf = key[len(prefix) :].partition("/")
            leaves.setdefault(folder, set()).add(leaf)
        return sorted(
            int(folder)
            for folder, names in leaves.items()
            if folder.isdigit() and _is_live(names)
        )

    def is_live(self, name: str, version: int) -> bool:
        """True while the version is committed and not deleted (one LIST call)."""
        prefix = layout.version_prefix(name, version)
        return _is_live({key[len(prefix) :] for key in self._keys(prefix)})

    def list_models(self) -> list[str]:
        """Names of the models with at least one committed version, sorted."""
        return sorted(
            name
            for name in self._subfolders(layout.MODELS_PREFIX)
            if self.list_versions(name)
        )

    def get_manifest(self, name: str, version: int) -> Manifest:
        """The manifest of a committed version, else VersionNotFoundError (also
        for a deleted one). ModelNotFoundError when the model has no version at
        all; ModelIntegrityError when the manifest is corrupt."""
        validate_model_name(name)
        try:
            response = self.s3.get_object(
                Bucket=self.bucket, Key=layout.manifest_key(name, version)
            )
        except ClientError as error:
            if not is_missing(error):
                raise
            response = None
        tombstone = layout.tombstone_key(name, version)
        if response is None or self.documents.etag(tombstone) is not None:
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
        """The artifact's bytes as stored: verify them before use."""
        with self.open_artifact(manifest) as body:
            return body.read()

    def open_artifact(self, manifest: Manifest) -> BinaryIO:
        """The artifact as stored, a stream to read and close: verify it as it is
        read (``chalicelib.model_files.download``)."""
        return self._open(
            manifest, layout.artifact_key(manifest.name, manifest.version)
        )

    def open_data_file(self, manifest: Manifest, file_name: str) -> BinaryIO:
        """One of the version's external data files, like ``open_artifact``."""
        key = layout.data_file_key(manifest.name, manifest.version, file_name)
        return self._open(manifest, key)

    def _open(self, manifest: Manifest, key: str) -> BinaryIO:
        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if is_missing(error):
                raise VersionNotFoundError(manifest.name, manifest.version) from None
            raise
        body: BinaryIO = response["Body"]  # type: ignore[assignment]
        return body


def _is_live(leaves: set[str]) -> bool:
    return layout.MANIFEST in leaves and layout.TOMBSTONE not in leaves


def _baseline_bytes(baseline: Baseline) -> bytes:
    # Compact and key-sorted: the bytes whose sha256 the manifest records.
    return json.dumps(baseline.to_json(), sort_keys=True).encode()


def _check_data_files(locations: list[str], given: Mapping[str, str]) -> None:
    """InvalidModelError unless ``given`` names exactly the files the model
    references, each a plain file name that is not the model's own."""
    for location in locations:
        if (
            location in {"", ".", "..", MODEL_FILE}
            or "/" in location
            or "\\" in location
        ):
            raise InvalidModelError(
                f"external data file {location!r} must be a plain file name other "
                f"than {MODEL_FILE!r}, beside the model"
            )
    missing = [location for location in locations if location not in given]
    if missing:
        raise InvalidModelError(
            f"the model references external data file {missing[0]!r}, not given"
        )
    extra = sorted(set(given) - set(locations))
    if extra:
        raise InvalidModelError(
            f"external data file {extra[0]!r} was given but the model does not "
            "reference it"
        )


def _inspect(data: bytes, data_files: Mapping[str, str]) -> ModelInfo:
    """``inspect_model``, from a folder holding the data files beside the model
    (linked, not copied) when it has any."""
    if not data_files:
        return inspect_model(data)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, MODEL_FILE)
        with open(path, "wb") as file:
            file.write(data)
        for file_name, source in data_files.items():
            os.symlink(os.path.abspath(source), os.path.join(folder, file_name))
        return inspect_model(data, path)


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
