"""A version's files in /tmp: streamed from S3 and verified as they arrive
(``download``), kept by sha256 in a bounded least-recently-used store
(``ArtifactFiles``), with a model's external data files beside it."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import shutil
import tempfile
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

from chalicelib.errors import ModelIntegrityError
from chalicelib.registry.manifest import Manifest

# The same logger as the sessions': its records are the model cache's.
logger = logging.getLogger("turnout.models")

MIB = 1024 * 1024
# The model file's name in a version's folder, in S3 and in /tmp alike: its
# external data files sit beside it, where onnxruntime looks for them.
MODEL_FILE = "model.onnx"
_CHUNK_BYTES = 8 * MIB


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
