"""ONNX sessions: read a model's signature; open sessions from a version's files
(``chalicelib.model_files`` streams and keeps them); cache the sessions.

onnxruntime is imported on first use, not at import time: a health check or an
alias lookup on a cold container should not pay for it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chalicelib.datatypes import v2_datatype
from chalicelib.errors import (
    InvalidModelError,
    ModelDoesNotFitError,
    ModelIntegrityError,
)
from chalicelib.model_files import MIB, MODEL_FILE, ArtifactFiles, Source, download
from chalicelib.model_header import read_model_header
from chalicelib.registry.manifest import Manifest, Signature, TensorSpec

if TYPE_CHECKING:
    import onnxruntime

logger = logging.getLogger("turnout.models")

# Peak memory of loading a model from its file, as a multiple of its bytes:
# bench/bigmodel.py measures about 1.1x (onnxruntime reads the weights once into
# its own buffers); the margin covers the interpreter and the request.
LOAD_MEMORY_FACTOR = 1.25


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
