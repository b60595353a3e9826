"""Where the registry and its aliases live in the model bucket: every S3 key.

::

    models/{name}/versions/{version}/claim.json     the version number, taken first
    models/{name}/versions/{version}/model.onnx     the artifact
    models/{name}/versions/{version}/baseline.json  the training baseline, written
                                                    before the manifest (or set once
                                                    later), never overwritten
    models/{name}/versions/{version}/data/{file}    its external data files, if any
    models/{name}/versions/{version}/manifest.json  written last: the commit point
    models/{name}/versions/{version}/deleted.json   the tombstone, written first
                                                    when the version is deleted
    models/{name}/aliases/{alias}.json              the alias's head: its current
                                                    revision, read when serving
    models/{name}/aliases/{alias}/revisions/{id}.json  one revision each, immutable;
                                                    id is the revision number
                                                    (8 digits) and a random suffix
    models/{name}/aliases/{alias}/rollout.json      the alias's latest rollout
    models/{name}/aliases/{alias}/rollouts/{id}/decisions/{n}.json
                                                    one record per evaluation
"""

from __future__ import annotations

MODELS_PREFIX = "models/"
CLAIM = "claim.json"
ARTIFACT = "model.onnx"
MANIFEST = "manifest.json"
BASELINE = "baseline.json"
TOMBSTONE = "deleted.json"


def versions_prefix(name: str) -> str:
    return f"{MODELS_PREFIX}{name}/versions/"


def version_prefix(name: str, version: int) -> str:
    return f"{versions_prefix(name)}{version}/"


def claim_key(name: str, version: int) -> str:
    return version_prefix(name, version) + CLAIM


def artifact_key(name: str, version: int) -> str:
    return version_prefix(name, version) + ARTIFACT


def data_files_prefix(name: str, version: int) -> str:
    return version_prefix(name, version) + "data/"


def data_file_key(name: str, version: int, file_name: str) -> str:
    return data_files_prefix(name, version) + file_name


def manifest_key(name: str, version: int) -> str:
    return version_prefix(name, version) + MANIFEST


def baseline_key(name: str, version: int) -> str:
    return version_prefix(name, version) + BASELINE


def tombstone_key(name: str, version: int) -> str:
    return version_prefix(name, version) + TOMBSTONE


def aliases_prefix(name: str) -> str:
    return f"{MODELS_PREFIX}{name}/aliases/"


def alias_head_key(name: str, alias: str) -> str:
    return f"{aliases_prefix(name)}{alias}.json"


def revision_id(revision: int, suffix: str) -> str:
    """The id of one write of ``revision``: two writers racing for the same number
    write two objects, and the head names the one that won."""
    return f"{revision:08d}-{suffix}"


def alias_revision_key(name: str, alias: str, revision_id: str) -> str:
    return f"{aliases_prefix(name)}{alias}/revisions/{revision_id}.json"


def rollout_key(name: str, alias: str) -> str:
    """The alias's rollout document (its latest rollout), next to its head."""
    return f"{aliases_prefix(name)}{alias}/rollout.json"


def rollout_decisions_prefix(name: str, alias: str, rollout_id: str) -> str:
    return f"{aliases_prefix(name)}{alias}/rollouts/{rollout_id}/decisions/"


def rollout_decision_key(
    name: str, alias: str, rollout_id: str, evaluation: int
) -> str:
    """One evaluation's decision record (numbered from 1, 6 digits)."""
    return f"{rollout_decisions_prefix(name, alias, rollout_id)}{evaluation:06d}.json"
