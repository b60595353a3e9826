"""ONNX files: read a model's signature, verify an artifact, cache sessions.

onnxruntime is imported on first use, not at import time: a health check or an
alias lookup on a cold container should not pay for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chalicelib.datatypes import v2_datatype
from chalicelib.errors import InvalidModelError, ModelIntegrityError
from chalicelib.registry.manifest import Manifest, Signature, TensorSpec

if TYPE_CHECKING:
    import onnxruntime

logger = logging.getLogger("turnout.models")


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
    model: bytes | str, *, threads: int = 0, spinning: bool = False
) -> onnxruntime.InferenceSession:
    """An onnxruntime CPU session over the model's bytes or its path, running each
    request on ``threads`` threads (0: onnxruntime's choice, one per core), whose
    idle threads spin waiting for work only when ``spinning``."""
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
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


def check_signature(manifest: Manifest, session: onnxruntime.InferenceSession) -> None:
    """Raise ModelIntegrityError unless the manifest's inputs and outputs are the
    session's own: a manifest edited by hand must not decide what reaches the model."""
    actual = signature_of(session)
    for kind, stored, own in (
        ("input", manifest.inputs, actual.inputs),
        ("output", manifest.outputs, actual.outputs),
    ):
        if len(stored) != len(own):
            raise ModelIntegrityError(
                manifest.name,
                manifest.version,
                f"the manifest lists {len(stored)} {kind}s, the model has {len(own)}",
            )
        for ours, theirs in zip(stored, own, strict=True):
            if ours != theirs:
                raise ModelIntegrityError(
                    manifest.name,
                    manifest.version,
                    f"the manifest's {kind} {_spec_text(ours)} differs from the "
                    f"model's {_spec_text(theirs)}",
                )


def _spec_text(spec: TensorSpec) -> str:
    return f"{spec.name!r} {spec.datatype} {list(spec.shape)}"


class ArtifactFiles:
    """Verified model files in ``directory``, named by sha256, at most ``max_bytes``.

    A new file makes room by removing the least recently used files that nobody is
    opening; a file that does not fit, or whose write fails (a full disk), is not
    kept, and its partial ``.part`` file is removed: the caller still has the bytes.
    """

    def __init__(self, directory: str, max_bytes: int) -> None:
        self._directory = directory
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._sizes: OrderedDict[str, int] | None = None  # least recently used first
        self._reserved = 0
        self._in_use: Counter[str] = Counter()

    def _path(self, sha256: str) -> str:
        return os.path.join(self._directory, f"{sha256}.onnx")

    def _index(self) -> OrderedDict[str, int]:
        """The files on disk (read once, oldest first); removes leftover ``.part``
        files of writes that a previous process did not finish. Call under the lock."""
        if self._sizes is None:
            found: list[tuple[float, str, int]] = []
            with (
                contextlib.suppress(FileNotFoundError),
                os.scandir(self._directory) as entries,
            ):
                for entry in entries:
                    if entry.name.endswith(".part"):
                        with contextlib.suppress(OSError):
                            os.remove(entry.path)
                    elif entry.name.endswith(".onnx") and entry.is_file():
                        stat = entry.stat()
                        found.append((stat.st_mtime, entry.name[:-5], stat.st_size))
            self._sizes = OrderedDict((sha, size) for _, sha, size in sorted(found))
        return self._sizes

    @contextlib.contextmanager
    def borrow(self, sha256: str) -> Iterator[str | None]:
        """The path of the file for ``sha256`` (None when there is none), which is
        not removed until the block ends."""
        with self._lock:
            index = self._index()
            present = sha256 in index
            if present:
                index.move_to_end(sha256)
                self._in_use[sha256] += 1
        if not present:
            yield None
            return
        try:
            yield self._path(sha256)
        finally:
            with self._lock:
                self._in_use[sha256] -= 1
                if not self._in_use[sha256]:
                    del self._in_use[sha256]

    def store(self, sha256: str, data: bytes) -> bool:
        """Keep ``data`` as the file of ``sha256``; False when it was not kept."""
        with self._lock:
            index = self._index()
            if sha256 in index:
                return True
            if not self._make_room(index, len(data)):
                return False
            self._reserved += len(data)
        kept = self._write(sha256, data)
        with self._lock:
            self._reserved -= len(data)
            if kept:
                index[sha256] = len(data)
        return kept

    def _make_room(self, index: OrderedDict[str, int], size: int) -> bool:
        """Remove unused files, least recently used first, until ``size`` more
        bytes fit. Call under the lock."""
        total = sum(index.values()) + self._reserved
        for sha256 in [sha for sha in index if sha not in self._in_use]:
            if total + size <= self._max_bytes:
                break
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._path(sha256))
            total -= index.pop(sha256)
        return total + size <= self._max_bytes

    def _write(self, sha256: str, data: bytes) -> bool:
        temporary = None
        try:
            os.makedirs(self._directory, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self._directory, suffix=".part")
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.replace(temporary, self._path(sha256))
        except OSError as error:
            if temporary is not None:
                with contextlib.suppress(OSError):
                    os.remove(temporary)
            logger.warning(
                "model file %s not kept in %s: %s", sha256, self._directory, error
            )
            return False
        return True

    def names(self) -> list[str]:
        """The sha256 of each file kept, least recently used first."""
        with self._lock:
            return list(self._index())


class ModelCache:
    """Per-container cache of sessions, bounded by the sum of model sizes.

    A model missing from memory is opened from its file in ``files`` (written only
    after verification), else fetched with ``fetch`` (which returns unverified
    bytes) and verified before it is kept. Every session's signature is checked
    against its manifest; sessions run on ``threads`` threads, spinning when
    ``spinning`` (``open_session``). An integrity failure is remembered for
    ``failure_seconds`` (by ``clock``): that version is refused meanwhile without
    downloading its artifact again.
    """

    def __init__(
        self,
        fetch: Callable[[Manifest], bytes],
        files: ArtifactFiles,
        max_bytes: int,
        *,
        threads: int = 0,
        spinning: bool = False,
        failure_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._files = files
        self._max_bytes = max_bytes
        self._threads = threads
        self._spinning = spinning
        self._failure_seconds = failure_seconds
        self._clock = clock
        self._sessions: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        self._failures: dict[tuple[str, int, str], tuple[ModelIntegrityError, float]]
        self._failures = {}
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, int], threading.Lock] = {}

    def get(self, manifest: Manifest) -> LoadedModel:
        """The version's session; ModelIntegrityError when its artifact or
        signature does not match its manifest (now or in the last
        ``failure_seconds``)."""
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
                self._raise_remembered_failure(manifest)
                try:
                    loaded = LoadedModel(manifest, self._open(manifest))
                except ModelIntegrityError as error:
                    with self._lock:
                        self._failures[(*key, manifest.sha256)] = (
                            error,
                            self._clock() + self._failure_seconds,
                        )
                    raise
                self._keep(key, loaded)
            return loaded

    def _raise_remembered_failure(self, manifest: Manifest) -> None:
        failure_key = (manifest.name, manifest.version, manifest.sha256)
        with self._lock:
            failure = self._failures.get(failure_key)
            if failure is not None and self._clock() >= failure[1]:
                del self._failures[failure_key]
                failure = None
        if failure is not None:
            error = failure[0]
            raise ModelIntegrityError(error.name, error.version, error.reason)

    def _open(self, manifest: Manifest) -> onnxruntime.InferenceSession:
        """A session over the model's file if one is kept, else over its fetched
        and verified bytes (then kept as a file); its signature checked."""
        with self._files.borrow(manifest.sha256) as path:
            if path is not None:
                session = open_session(
                    path, threads=self._threads, spinning=self._spinning
                )
                check_signature(manifest, session)
                return session
        data = self._fetch(manifest)
        verify_artifact(manifest, data)
        session = open_session(data, threads=self._threads, spinning=self._spinning)
        check_signature(manifest, session)
        self._files.store(manifest.sha256, data)
        return session

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
