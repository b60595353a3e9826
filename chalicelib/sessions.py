"""ONNX files: read a model's signature; stream a version's files from S3 to
/tmp, verifying them as they arrive; open sessions from those files; cache both.

onnxruntime is imported on first use, not at import time: a health check or an
alias lookup on a cold container should not pay for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from chalicelib.datatypes import v2_datatype
from chalicelib.errors import (
    InvalidModelError,
    ModelDoesNotFitError,
    ModelIntegrityError,
)
from chalicelib.registry.manifest import Manifest, Signature, TensorSpec

if TYPE_CHECKING:
    import onnxruntime

logger = logging.getLogger("turnout.models")

MIB = 1024 * 1024
# The model file's name in a version's folder, in S3 and in /tmp alike: its
# external data files sit beside it, where onnxruntime looks for them.
MODEL_FILE = "model.onnx"
# Peak memory of loading a model from its file, as a multiple of its bytes:
# bench/bigmodel.py measures about 1.1x (onnxruntime reads the weights once into
# its own buffers); the margin covers the interpreter and the request.
LOAD_MEMORY_FACTOR = 1.25
_CHUNK_BYTES = 8 * MIB


def _onnxruntime() -> Any:
    import onnxruntime

    return onnxruntime


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    """The sha256 of the file at ``path``, read in chunks (bounded memory)."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


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


def inspect_model(data: bytes, path: str | None = None) -> ModelInfo:
    """Load ``data`` with onnxruntime and describe it; InvalidModelError if it fails.

    ``path``: a file holding ``data``, loaded instead (with its external data
    files beside it)."""
    if not data:
        raise InvalidModelError("the file is empty")
    try:
        session = open_session(data if path is None else path)
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


def _messages(buffer: memoryview, number: int) -> Iterator[memoryview]:
    """The length-delimited values of field ``number`` in ``buffer``."""
    for field_number, value in _fields(buffer):
        if field_number == number and isinstance(value, memoryview):
            yield value


def external_data_locations(data: bytes) -> list[str]:
    """The external data files the graph's initializers name, in order of first
    mention (ModelProto 7 graph -> GraphProto 5 initializer -> TensorProto 13
    external_data: key 1 ``location``, value 2 the file name). Data that is not
    a protobuf names none: loading it says what is wrong with it."""
    locations: dict[str, None] = {}
    try:
        for graph in _messages(memoryview(data), 7):
            for tensor in _messages(graph, 5):
                for entry in _messages(tensor, 13):
                    pair = {
                        number: bytes(value)
                        for number, value in _fields(entry)
                        if isinstance(value, memoryview)
                    }
                    if pair.get(1) == b"location" and 2 in pair:
                        locations[pair[2].decode("utf-8", "replace")] = None
    except (IndexError, ValueError):
        return []
    return list(locations)


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

    A model is ``{sha256}.onnx``, or, with external data files, a folder
    ``{sha256}.model/`` holding ``model.onnx`` and its data files side by side.
    Files arrive through ``receive``: written into a ``.part`` folder first, moved
    into place once the caller has verified and opened them. A new model makes
    room by removing the least recently used models that nobody is opening; a
    model that does not fit, or whose move fails, is not kept, and its ``.part``
    folder is removed (the caller's session does not need it any more).
    """

    def __init__(self, directory: str, max_bytes: int) -> None:
        self._directory = directory
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._sizes: OrderedDict[str, int] | None = None  # least recently used first
        self._reserved = 0
        self._in_use: Counter[str] = Counter()

    def _file(self, sha256: str) -> str:
        return os.path.join(self._directory, f"{sha256}.onnx")

    def _folder(self, sha256: str) -> str:
        return os.path.join(self._directory, f"{sha256}.model")

    def _index(self) -> OrderedDict[str, int]:
        """The models on disk (read once, oldest first); removes leftover ``.part``
        files and folders of writes that a previous process did not finish. Call
        under the lock."""
        if self._sizes is None:
            found: list[tuple[float, str, int]] = []
            with (
                contextlib.suppress(FileNotFoundError),
                os.scandir(self._directory) as entries,
            ):
                for entry in entries:
                    if entry.name.endswith(".part"):
                        _remove(entry.path)
                    elif entry.name.endswith(".onnx") and entry.is_file():
                        stat = entry.stat()
                        found.append((stat.st_mtime, entry.name[:-5], stat.st_size))
                    elif entry.name.endswith(".model") and entry.is_dir():
                        size = _folder_size(entry.path)
                        found.append((entry.stat().st_mtime, entry.name[:-6], size))
            self._sizes = OrderedDict((sha, size) for _, sha, size in sorted(found))
        return self._sizes

    @contextlib.contextmanager
    def borrow(self, sha256: str) -> Iterator[str | None]:
        """The path of the model file for ``sha256`` (None when there is none),
        which is not removed until the block ends."""
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
            folder = self._folder(sha256)
            yield (
                os.path.join(folder, MODEL_FILE)
                if os.path.isdir(folder)
                else self._file(sha256)
            )
        finally:
            with self._lock:
                self._in_use[sha256] -= 1
                if not self._in_use[sha256]:
                    del self._in_use[sha256]

    @contextlib.contextmanager
    def receive(self, sha256: str, size: int) -> Iterator[str]:
        """A new empty folder to write the model of ``sha256`` into (``model.onnx``
        and its data files, ``size`` bytes in all). When the block ends normally
        the model is kept if it fits; when it raises, nothing is left behind
        (not even ``directory``, if this made it)."""
        with self._lock:
            index = self._index()
            fits = sha256 not in index and self._make_room(index, size)
            if fits:
                self._reserved += size
        created = not os.path.isdir(self._directory)
        part = None
        try:
            os.makedirs(self._directory, exist_ok=True)
            part = tempfile.mkdtemp(dir=self._directory, suffix=".part")
            yield part
            kept = fits and self._move_into_place(sha256, part)
        except BaseException:
            if part is not None:
                _remove(part)
            if created:
                with contextlib.suppress(OSError):
                    os.rmdir(self._directory)
            raise
        finally:
            with self._lock:
                if fits:
                    self._reserved -= size
        with self._lock:
            if kept:
                index[sha256] = size
        _remove(part)

    def _move_into_place(self, sha256: str, part: str) -> bool:
        names = os.listdir(part)
        try:
            if names == [MODEL_FILE]:
                os.replace(os.path.join(part, MODEL_FILE), self._file(sha256))
            else:
                os.replace(part, self._folder(sha256))
        except OSError as error:
            logger.warning(
                "model file %s not kept in %s: %s", sha256, self._directory, error
            )
            return False
        return True

    def store(self, sha256: str, data: bytes) -> bool:
        """Keep ``data`` as the file of ``sha256``; False when it was not kept."""
        with self._lock:
            if sha256 in self._index():
                return True
        try:
            with (
                self.receive(sha256, len(data)) as part,
                open(os.path.join(part, MODEL_FILE), "wb") as file,
            ):
                file.write(data)
        except OSError as error:
            logger.warning(
                "model file %s not kept in %s: %s", sha256, self._directory, error
            )
            return False
        return sha256 in self.names()

    def _make_room(self, index: OrderedDict[str, int], size: int) -> bool:
        """Remove unused models, least recently used first, until ``size`` more
        bytes fit. Call under the lock."""
        total = sum(index.values()) + self._reserved
        for sha256 in [sha for sha in index if sha not in self._in_use]:
            if total + size <= self._max_bytes:
                break
            _remove(self._file(sha256))
            _remove(self._folder(sha256))
            total -= index.pop(sha256)
        return total + size <= self._max_bytes

    def names(self) -> list[str]:
        """The sha256 of each model kept, least recently used first."""
        with self._lock:
            return list(self._index())


def _remove(path: str) -> None:
    """Remove a file or a folder, if it is there."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.remove(path)


def _folder_size(path: str) -> int:
    with os.scandir(path) as entries:
        return sum(entry.stat().st_size for entry in entries if entry.is_file())


Source = bytes | BinaryIO


def download(
    source: Source, path: str, manifest: Manifest, what: str, size: int, sha256: str
) -> None:
    """Write ``source`` (bytes or a readable stream, closed here) to ``path`` in
    chunks, hashing as it goes; ModelIntegrityError, naming ``what``, unless it
    has ``size`` bytes and ``sha256``. Never writes more than ``size`` bytes.

    One thread hashes and writes a chunk while this one reads the next: all three
    release the GIL, and sha256 alone runs at about 550 MB/s here."""
    digest = hashlib.sha256()
    received = 0

    def consume(chunk: bytes, offset: int) -> None:
        digest.update(chunk)
        if offset < size:
            file.write(chunk[: size - offset])

    with (
        io.BytesIO(source) if isinstance(source, bytes) else source as stream,
        open(path, "wb") as file,
        ThreadPoolExecutor(1) as worker,
    ):
        pending: Future[None] | None = None
        while chunk := stream.read(_CHUNK_BYTES):
            if pending is not None:
                pending.result()
            pending = worker.submit(consume, chunk, received)
            received += len(chunk)
        if pending is not None:
            pending.result()
    if received != size:
        raise ModelIntegrityError(
            manifest.name,
            manifest.version,
            f"{what} is {received} bytes, manifest says {size}",
        )
    if digest.hexdigest() != sha256:
        raise ModelIntegrityError(
            manifest.name,
            manifest.version,
            f"{what} sha256 is {digest.hexdigest()}, manifest says {sha256}",
        )


class ModelCache:
    """Per-container cache of sessions, bounded by the sum of model sizes.

    A model missing from memory is opened from its file in ``files`` (written only
    after verification), else streamed to a file with ``fetch`` (model.onnx) and
    ``fetch_data_file`` (its external data files), each checked against its size
    and sha256 as it arrives, and opened from that file: onnxruntime then holds
    about 1.1x the model, against about 3x from bytes. Every session's signature
    is checked against its manifest; sessions run on ``threads`` threads,
    spinning when ``spinning`` (``open_session``). An integrity failure is
    remembered for
    ``failure_seconds`` (by ``clock``): that version is refused meanwhile without
    downloading its artifact again. A version whose files exceed ``tmp_bytes``, or
    whose loading would exceed ``memory_bytes`` (LOAD_MEMORY_FACTOR times its
    size), is refused before any download (ModelDoesNotFitError).
    """

    def __init__(
        self,
        fetch: Callable[[Manifest], Source],
        files: ArtifactFiles,
        max_bytes: int,
        *,
        fetch_data_file: Callable[[Manifest, str], Source] | None = None,
        tmp_bytes: int | None = None,
        memory_bytes: int | None = None,
        threads: int = 0,
        spinning: bool = False,
        failure_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._fetch_data_file = fetch_data_file
        self._files = files
        self._max_bytes = max_bytes
        self._tmp_bytes = tmp_bytes
        self._memory_bytes = memory_bytes
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
        ``failure_seconds``); ModelDoesNotFitError when it is too large here."""
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
        """A session over the model's kept file if there is one, else over the
        files downloaded and verified (then kept); its signature checked."""
        with self._files.borrow(manifest.sha256) as path:
            if path is not None:
                session = open_session(
                    path, threads=self._threads, spinning=self._spinning
                )
                check_signature(manifest, session)
                return session
        self._refuse_if_too_large(manifest)
        self._make_memory_room(manifest)
        try:
            with self._files.receive(manifest.sha256, manifest.total_size) as part:
                self._download(manifest, part)
                session = open_session(
                    os.path.join(part, MODEL_FILE),
                    threads=self._threads,
                    spinning=self._spinning,
                )
                check_signature(manifest, session)
        except OSError as error:  # a full /tmp, most likely
            raise ModelDoesNotFitError(
                manifest.name,
                manifest.version,
                f"its files ({_mib(manifest.total_size)}) could not be written to "
                f"the model file cache: {error}",
            ) from None
        return session

    def _download(self, manifest: Manifest, part: str) -> None:
        download(
            self._fetch(manifest),
            os.path.join(part, MODEL_FILE),
            manifest,
            "artifact",
            manifest.size,
            manifest.sha256,
        )
        for data_file in manifest.data_files:
            if self._fetch_data_file is None:
                raise ValueError("this ModelCache was given no fetch_data_file")
            download(
                self._fetch_data_file(manifest, data_file.name),
                os.path.join(part, data_file.name),
                manifest,
                f"data file {data_file.name!r}",
                data_file.size,
                data_file.sha256,
            )

    def _refuse_if_too_large(self, manifest: Manifest) -> None:
        size = manifest.total_size
        if self._tmp_bytes is not None and size > self._tmp_bytes:
            raise ModelDoesNotFitError(
                manifest.name,
                manifest.version,
                f"its files are {_mib(size)}, over the function's /tmp of "
                f"{_mib(self._tmp_bytes)} (TURNOUT_EPHEMERAL_STORAGE_MB): raise the "
                "stage's ephemeral storage",
            )
        need = int(size * LOAD_MEMORY_FACTOR)
        if self._memory_bytes is not None and need > self._memory_bytes:
            raise ModelDoesNotFitError(
                manifest.name,
                manifest.version,
                f"loading its {_mib(size)} takes about {_mib(need)} of memory, over "
                f"the function's {_mib(self._memory_bytes)}: raise the stage's "
                "lambda_memory_size",
            )

    def _make_memory_room(self, manifest: Manifest) -> None:
        """Drop the least recently used sessions until loading ``manifest`` beside
        the rest fits the function's memory: two large models at once would not."""
        if self._memory_bytes is None:
            return
        need = int(manifest.total_size * LOAD_MEMORY_FACTOR)
        with self._lock:
            held = sum(item.manifest.total_size for item in self._sessions.values())
            while self._sessions and held + need > self._memory_bytes:
                _, evicted = self._sessions.popitem(last=False)
                held -= evicted.manifest.total_size

    def _keep(self, key: tuple[str, int], loaded: LoadedModel) -> None:
        with self._lock:
            self._sessions[key] = loaded
            self._sessions.move_to_end(key)
            total = sum(item.manifest.total_size for item in self._sessions.values())
            while total > self._max_bytes and len(self._sessions) > 1:
                _, evicted = self._sessions.popitem(last=False)
                total -= evicted.manifest.total_size

    def cached(self) -> list[tuple[str, int]]:
        """Keys of the sessions in memory, least recently used first."""
        with self._lock:
            return list(self._sessions)


def _mib(size: int) -> str:
    return f"{size / MIB:,.1f} MiB"
