"""The manifests a warm container serves from, revalidated after a TTL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from chalicelib.registry.manifest import Manifest
from chalicelib.registry.versions import Registry


class ManifestCache:
    """A warm container's copy of the manifests it has read, for serving.

    A manifest never changes, but its version can be deleted: a copy is trusted
    for ``ttl_seconds`` (by ``clock``), then revalidated with one LIST of the
    version's keys. A version deleted (or tombstoned) meanwhile is dropped, and
    from then on not found, as ``Registry.list_versions`` says.
    """

    def __init__(
        self,
        registry: Registry,
        ttl_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: dict[tuple[str, int], tuple[Manifest, float]] = {}
        # Versions found deleted: numbers are never reused, so they stay deleted.
        self._deleted: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    def offer(self, manifest: Manifest) -> None:
        """Hold ``manifest``, just read with an alias head that sends traffic to
        its version, as if the registry had been read now; a version held already
        keeps its copy, and one found deleted stays so. A head routes only to
        versions that are not deleted (a deletion is refused while one does,
        ``chalicelib.registry.deletion``), so the head stands in for the
        manifest's read and its tombstone check; after ``ttl_seconds`` the copy is
        revalidated like any other."""
        key = (manifest.name, manifest.version)
        now = self._clock()
        with self._lock:
            if key not in self._deleted:
                self._entries.setdefault(key, (manifest, now))

    def get(self, name: str, version: int) -> Manifest:
        """The version's manifest; the errors of ``Registry.get_manifest``."""
        key = (name, version)
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and now - entry[1] < self._ttl:
            return entry[0]
        if entry is not None and self.registry.is_live(name, version):
            manifest = entry[0]
        else:
            with self._lock:
                if self._entries.pop(key, None) is not None:
                    self._deleted.add(key)
            manifest = self.registry.get_manifest(name, version)
        with self._lock:
            self._entries[key] = (manifest, now)
        return manifest
