"""The per-container session cache: memory bound, local file reuse, one load."""

from __future__ import annotations

import threading
from pathlib import Path

from chalicelib.models import ModelCache
from chalicelib.registry import Registry
from chalicelib.version_manifest import Manifest


class CountingFetch:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.calls: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def __call__(self, manifest: Manifest) -> bytes:
        with self._lock:
            self.calls.append((manifest.name, manifest.version))
        return self.registry.fetch_artifact(manifest)


def test_sessions_are_evicted_least_recently_used_past_the_byte_bound(
    demo_registry: Registry, tmp_path: Path
) -> None:
    iris1 = demo_registry.get_manifest("iris", 1)
    iris2 = demo_registry.get_manifest("iris", 2)
    diabetes = demo_registry.get_manifest("diabetes", 1)
    bound = iris2.size + diabetes.size
    cache = ModelCache(demo_registry.fetch_artifact, str(tmp_path), bound)
    cache.get(iris2)
    cache.get(diabetes)
    assert cache.cached() == [("iris", 2), ("diabetes", 1)]
    cache.get(iris2)  # now the most recently used
    cache.get(iris1)  # pushes the total over the bound: diabetes goes
    assert cache.cached() == [("iris", 2), ("iris", 1)]


def test_an_evicted_model_reloads_from_the_local_file_without_s3(
    demo_registry: Registry, tmp_path: Path
) -> None:
    fetch = CountingFetch(demo_registry)
    iris1 = demo_registry.get_manifest("iris", 1)
    iris2 = demo_registry.get_manifest("iris", 2)
    cache = ModelCache(fetch, str(tmp_path), max_bytes=1)  # keeps one session
    cache.get(iris1)
    cache.get(iris2)
    cache.get(iris1)
    assert cache.cached() == [("iris", 1)]
    assert fetch.calls == [("iris", 1), ("iris", 2)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{iris1.sha256}.onnx", f"{iris2.sha256}.onnx"]
    )


def test_concurrent_first_requests_load_a_version_once(
    demo_registry: Registry, tmp_path: Path
) -> None:
    fetch = CountingFetch(demo_registry)
    iris2 = demo_registry.get_manifest("iris", 2)
    cache = ModelCache(fetch, str(tmp_path), max_bytes=10**9)
    sessions = []
    threads = [
        threading.Thread(target=lambda: sessions.append(cache.get(iris2).session))
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fetch.calls == [("iris", 2)]
    assert len({id(session) for session in sessions}) == 1
