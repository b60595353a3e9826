"""ONNX files: read a model's signature, verify an artifact, cache sessions.

onnxruntime is imported on first use, not at import time: a health check or an
alias lookup on a cold container should not pay for it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chalicelib.datatypes import v2_datatype
from chalicelib.errors import InvalidModelError, ModelIntegrityError
from chalicelib.version_manifest import Manifest, Signature, TensorSpec

if TYPE_CHECKING:
    import onnxruntime


def _onnxruntime() -> Any:
    import onnxruntime

    return onnxruntime


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ModelInfo:
    """What registration reads out of an ONNX file."""

    signature: Signature
    opset: dict[str, int]
    producer: dict[str, str]
    ir_version: int
    metadata: dict[str, str]


def open_session(
    model: bytes | str, *, threads: int = 0
) -> onnxruntime.InferenceSession:
    """An onnxruntime CPU session over the model's bytes or its path, running each
    request on ``threads`` threads (0: onnxruntime's choice, one per core)."""
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    return ort.InferenceSession(
        model, sess_options=options, providers=["CPUExecutionProvider"]
    )


def _dimension(dim: object) -> int:
    return dim if isinstance(dim, int) and dim >= 0 else -1


def signature_of(session: onnxruntime.InferenceSession) -> Signature:
    """Inputs and outputs with V2 datatypes; symbolic dimensions become -1."""

    def specs(args: list[Any]) -> tuple[TensorSpec, ...]:
        return tuple(
            TensorSpec(
                name=arg.name,
                datatype=v2_datatype(arg.type),
                shape=tuple(_dimension(d) for d in (arg.shape or [])),
            )
            for arg in args
        )

    return Signature(
        inputs=specs(session.get_inputs()), outputs=specs(session.get_outputs())
    )


def inspect_model(data: bytes) -> ModelInfo:
    """Load ``data`` with onnxruntime and describe it; InvalidModelError if it fails."""
    if not data:
        raise InvalidModelError("the file is empty")
    try:
        session = open_session(data)
    except Exception as error:  # onnxruntime raises several unrelated types
        first_line = str(error).strip().splitlines()[0] if str(error) else ""
        raise InvalidModelError(first_line or type(error).__name__) from None
    header = read_model_header(data)
    meta = session.get_modelmeta()
    producer = {"name": meta.producer_name or "", "version": header.producer_version}
    return ModelInfo(
        signature=signature_of(session),
        opset=header.opset,
        producer=producer,
        ir_version=header.ir_version,
        metadata=dict(meta.custom_metadata_map or {}),
    )


@dataclass(frozen=True)
class ModelHeader:
    ir_version: int
    producer_version: str
    opset: dict[str, int]


def _varint(buffer: memoryview, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7


def _fields(buffer: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """Top-level (field number, value) pairs of a protobuf message."""
    position = 0
    while position < len(buffer):
        key, position = _varint(buffer, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, position = _varint(buffer, position)
            yield number, value
        elif wire_type == 2:
            length, position = _varint(buffer, position)
            yield number, buffer[position : position + length]
            position += length
        elif wire_type == 1:
            position += 8
        elif wire_type == 5:
            position += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")


def read_model_header(data: bytes) -> ModelHeader:
    """IR version, producer version and opsets of an ONNX ModelProto.

    Walks the protobuf's top level by hand so that the runtime does not need the
    ``onnx`` package (fields: 1 ir_version, 3 producer_version, 8 opset_import).
    """
    ir_version = 0
    producer_version = ""
    opset: dict[str, int] = {}
    try:
        for number, value in _fields(memoryview(data)):
            if number == 1 and isinstance(value, int):
                ir_version = value
            elif number == 3 and isinstance(value, memoryview):
                producer_version = bytes(value).decode("utf-8", "replace")
            elif number == 8 and isinstance(value, memoryview):
                domain, version = "", 0
                for sub_number, sub_value in _fields(value):
                    if sub_number == 1 and isinstance(sub_value, memoryview):
                        domain = bytes(sub_value).decode("utf-8", "replace")
                    elif sub_number == 2 and isinstance(sub_value, int):
                        version = sub_value
                opset[domain or "ai.onnx"] = version
    except (IndexError, ValueError) as error:
        raise InvalidModelError(f"cannot read the ONNX header: {error}") from None
    return ModelHeader(ir_version, producer_version, opset)


def verify_artifact(manifest: Manifest, data: bytes) -> None:
    """Raise ModelIntegrityError unless ``data`` has the manifest's size and sha256."""
    if len(data) != manifest.size:
        raise ModelIntegrityError(
            manifest.name,
            manifest.version,
            f"artifact is {len(data)} bytes, manifest says {manifest.size}",
        )
    digest = sha256_hex(data)
    if digest != manifest.sha256:
        raise ModelIntegrityError(
            manifest.name,
            manifest.version,
            f"artifact sha256 is {digest}, manifest says {manifest.sha256}",
        )


@dataclass(frozen=True)
class LoadedModel:
    """A verified, ready session and the manifest it was checked against."""

    manifest: Manifest
    session: onnxruntime.InferenceSession


class ModelCache:
    """Per-container cache of sessions, bounded by the sum of model sizes.

    A model missing from memory is read from the local file cache (``cache_dir``,
    files named by sha256 and written only after verification), else fetched with
    ``fetch`` (which returns unverified bytes) and verified before it is kept.
    """

    def __init__(
        self,
        fetch: Callable[[Manifest], bytes],
        cache_dir: str,
        max_bytes: int,
        *,
        threads: int = 0,
    ) -> None:
        self._fetch = fetch
        self._cache_dir = cache_dir
        self._max_bytes = max_bytes
        self._threads = threads
        self._sessions: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, int], threading.Lock] = {}

    def get(self, manifest: Manifest) -> LoadedModel:
        key = (manifest.name, manifest.version)
        with self._lock:
            loaded = self._sessions.get(key)
            if loaded is not None and loaded.manifest.sha256 == manifest.sha256:
                self._sessions.move_to_end(key)
                return loaded
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                loaded = self._sessions.get(key)
            if loaded is None or loaded.manifest.sha256 != manifest.sha256:
                session = open_session(self._verified(manifest), threads=self._threads)
                loaded = LoadedModel(manifest, session)
                self._keep(key, loaded)
            return loaded

    def _verified(self, manifest: Manifest) -> bytes | str:
        """The path of the model's file in the file cache, else its bytes, fetched,
        verified and written to the file cache (the session is then opened from
        the bytes in memory, not read back from the file)."""
        path = os.path.join(self._cache_dir, f"{manifest.sha256}.onnx")
        if os.path.exists(path):
            return path
        data = self._fetch(manifest)
        verify_artifact(manifest, data)
        os.makedirs(self._cache_dir, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self._cache_dir, suffix=".part")
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
        return data

    def _keep(self, key: tuple[str, int], loaded: LoadedModel) -> None:
        with self._lock:
            self._sessions[key] = loaded
            self._sessions.move_to_end(key)
            total = sum(item.manifest.size for item in self._sessions.values())
            while total > self._max_bytes and len(self._sessions) > 1:
                _, evicted = self._sessions.popitem(last=False)
                total -= evicted.manifest.size

    def cached(self) -> list[tuple[str, int]]:
        """Keys of the sessions in memory, least recently used first."""
        with self._lock:
            return list(self._sessions)
