"""The manifest of a model version: what the registry promises about it, and
its stored form read back with every field checked (``read_manifest``)."""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from chalicelib.errors import ModelIntegrityError

MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: V2 datatype, shape with -1 for dynamic dimensions."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(
            name=str(data["name"]),
            datatype=str(data["datatype"]),
            shape=tuple(int(d) for d in data["shape"]),
        )


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec | None:
        return self._inputs_by_name.get(name)

    def output(self, name: str) -> TensorSpec | None:
        return self._outputs_by_name.get(name)

    # Looked up on every request: built once per signature.
    @functools.cached_property
    def _inputs_by_name(self) -> dict[str, TensorSpec]:
        return {spec.name: spec for spec in reversed(self.inputs)}

    @functools.cached_property
    def _outputs_by_name(self) -> dict[str, TensorSpec]:
        return {spec.name: spec for spec in reversed(self.outputs)}


@dataclass(frozen=True)
class DataFile:
    """An external data file of a model (ONNX external data), stored beside it."""

    name: str
    sha256: str
    size: int

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataFile:
        return cls(
            name=str(data["name"]), sha256=str(data["sha256"]), size=int(data["size"])
        )


@dataclass(frozen=True)
class Manifest:
    """Written last when a version is registered: its presence commits the version."""

    name: str
    version: int
    sha256: str
    size: int
    created_at: str
    signature: Signature
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    labels: tuple[str, ...] | None = None
    opset: dict[str, int] = field(default_factory=dict)
    producer: dict[str, str] = field(default_factory=dict)
    ir_version: int = 0
    format: int = MANIFEST_FORMAT
    # Where the version came from (``turnout.publish``: framework, converter
    # versions, parity result, accepted tolerance); empty for a plain register.
    provenance: dict[str, Any] = field(default_factory=dict)
    # The sha256 of baseline.json when it was stored with the version (None when
    # there was none then; ``Registry.set_baseline`` may add one later, once).
    baseline_sha256: str | None = None
    # The external data files model.onnx references (models over protobuf's
    # 2 GB); ``sha256`` and ``size`` above are model.onnx's own.
    data_files: tuple[DataFile, ...] = ()

    @property
    def total_size(self) -> int:
        """Bytes of model.onnx and its external data files together."""
        return self.size + sum(data_file.size for data_file in self.data_files)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.signature.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.signature.outputs

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["signature"]
        data["inputs"] = [spec.to_dict() for spec in self.inputs]
        data["outputs"] = [spec.to_dict() for spec in self.outputs]
        data["labels"] = list(self.labels) if self.labels is not None else None
        # Written only when set, so a plain registration's manifest reads as before.
        if not self.provenance:
            del data["provenance"]
        if self.baseline_sha256 is None:
            del data["baseline_sha256"]
        if not self.data_files:
            del data["data_files"]  # manifests of single-file models stay as they were
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        labels = data.get("labels")
        baseline_sha256 = data.get("baseline_sha256")
        return cls(
            name=str(data["name"]),
            version=int(data["version"]),
            sha256=str(data["sha256"]),
            size=int(data["size"]),
            created_at=str(data["created_at"]),
            signature=Signature(
                inputs=tuple(TensorSpec.from_dict(d) for d in data["inputs"]),
                outputs=tuple(TensorSpec.from_dict(d) for d in data["outputs"]),
            ),
            description=str(data.get("description", "")),
            tags={str(k): str(v) for k, v in data.get("tags", {}).items()},
            labels=tuple(str(label) for label in labels) if labels else None,
            opset={str(k): int(v) for k, v in data.get("opset", {}).items()},
            producer={str(k): str(v) for k, v in data.get("producer", {}).items()},
            ir_version=int(data.get("ir_version", 0)),
            format=int(data.get("format", MANIFEST_FORMAT)),
            provenance=_json_object(data.get("provenance", {})),
            baseline_sha256=(None if baseline_sha256 is None else str(baseline_sha256)),
            data_files=tuple(DataFile.from_dict(d) for d in data.get("data_files", [])),
        )


def _json_object(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError("expected a JSON object")
    return {str(key): item for key, item in value.items()}


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


@dataclass(frozen=True)
class ClassifierOutputs:
    """The two outputs of a classifier: the predicted class and the probabilities."""

    label: TensorSpec | None
    probabilities: TensorSpec


_LABEL_TYPES = frozenset({"INT64", "INT32", "BYTES"})
_FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})


def classifier_outputs(signature: Signature) -> ClassifierOutputs | None:
    """Find a classifier's outputs: a 2-D float tensor named like probabilities
    (or the only 2-D float output beside a label), and a 1-D label tensor.

    None when the model does not look like a classifier (a regressor, say).
    """
    floats = [
        spec
        for spec in signature.outputs
        if spec.datatype in _FLOAT_TYPES and len(spec.shape) == 2
    ]
    labels = [
        spec
        for spec in signature.outputs
        if spec.datatype in _LABEL_TYPES and len(spec.shape) == 1
    ]
    named = [spec for spec in floats if "prob" in spec.name.lower()]
    if named:
        probabilities = named[0]
    elif len(floats) == 1 and labels:
        probabilities = floats[0]
    else:
        return None
    return ClassifierOutputs(
        label=labels[0] if labels else None, probabilities=probabilities
    )
