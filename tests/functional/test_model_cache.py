"""The per-container session cache: memory bound, local file reuse, one load."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from chalicelib.model_files import ArtifactFiles
from chalicelib.registry.manifest import Manifest
from chalicelib.registry.versions import Registry
from chalicelib.sessions import ModelCache
from tests.demo_support import artifact_files


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
    cache = ModelCache(demo_registry.fetch_artifact, artifact_files(tmp_path), bound)
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
    cache = ModelCache(
        fetch, artifact_files(tmp_path), max_bytes=1
    )  # keeps one session
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
    cache = ModelCache(fetch, artifact_files(tmp_path), max_bytes=10**9)
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


def file_names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def test_model_files_are_bounded_on_disk_least_recently_used_first(
    demo_registry: Registry, tmp_path: Path
) -> None:
    iris1 = demo_registry.get_manifest("iris", 1)
    iris2 = demo_registry.get_manifest("iris", 2)
    diabetes = demo_registry.get_manifest("diabetes", 1)
    files = ArtifactFiles(str(tmp_path), iris2.size + diabetes.size)
    cache = ModelCache(demo_registry.fetch_artifact, files, max_bytes=1)
    cache.get(iris2)
    cache.get(diabetes)
    cache.get(iris2)  # read back from its file: now the most recently used
    cache.get(iris1)  # no room for it beside both: the diabetes file goes
    assert files.names() == [iris2.sha256, iris1.sha256]
    assert file_names(tmp_path) == sorted(
        [f"{iris1.sha256}.onnx", f"{iris2.sha256}.onnx"]
    )


def test_a_file_being_opened_is_never_removed_to_make_room(
    demo_registry: Registry, tmp_path: Path
) -> None:
    iris1 = demo_registry.get_manifest("iris", 1)
    iris2 = demo_registry.get_manifest("iris", 2)
    files = ArtifactFiles(str(tmp_path), iris2.size)
    assert files.store(iris2.sha256, demo_registry.fetch_artifact(iris2))
    with files.borrow(iris2.sha256) as path:
        assert path == str(tmp_path / f"{iris2.sha256}.onnx")
        assert not files.store(iris1.sha256, demo_registry.fetch_artifact(iris1))
        assert file_names(tmp_path) == [f"{iris2.sha256}.onnx"]
    assert files.store(iris1.sha256, demo_registry.fetch_artifact(iris1))
    assert file_names(tmp_path) == [f"{iris1.sha256}.onnx"]


def test_a_model_larger_than_the_bound_is_served_and_not_kept(
    demo_registry: Registry, tmp_path: Path
) -> None:
    iris2 = demo_registry.get_manifest("iris", 2)
    files = ArtifactFiles(str(tmp_path / "models"), iris2.size - 1)
    cache = ModelCache(demo_registry.fetch_artifact, files, max_bytes=10**9)
    assert cache.get(iris2).manifest == iris2
    assert files.names() == []


def test_a_failed_write_serves_the_model_and_leaves_no_part_file(
    demo_registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    iris1 = demo_registry.get_manifest("iris", 1)
    # A directory where the file should go: the rename after the write fails,
    # as a write to a full /tmp would.
    (tmp_path / f"{iris1.sha256}.onnx").mkdir()
    files = ArtifactFiles(str(tmp_path), 10**9)
    cache = ModelCache(demo_registry.fetch_artifact, files, max_bytes=10**9)
    assert cache.get(iris1).manifest == iris1
    assert files.names() == []
    assert file_names(tmp_path) == [f"{iris1.sha256}.onnx"]  # the directory only
    (record,) = [r for r in caplog.records if r.name == "turnout.models"]
    assert record.getMessage().startswith(
        f"model file {iris1.sha256} not kept in {tmp_path}: [Errno 21] Is a directory"
    )


def test_leftover_part_files_are_removed_and_kept_files_reused(
    demo_registry: Registry, tmp_path: Path
) -> None:
    iris1 = demo_registry.get_manifest("iris", 1)
    ArtifactFiles(str(tmp_path), 10**9).store(
        iris1.sha256, demo_registry.fetch_artifact(iris1)
    )
    (tmp_path / "crashed.part").write_bytes(b"half a model")
    files = ArtifactFiles(str(tmp_path), 10**9)  # a new process, same /tmp
    assert files.names() == [iris1.sha256]
    assert file_names(tmp_path) == [f"{iris1.sha256}.onnx"]
