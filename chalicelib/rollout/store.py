"""Rollout documents and decision records in the model bucket, and the alias
changes a rollout makes.

The rollout document sits next to the alias's head, not inside it (serving
reads the head on every cache miss and has no use for it):
``models/{name}/aliases/{alias}/rollout.json``, changed only by compare-and-swap
on its ETag (``chalicelib.documents``), so two evaluators at once cannot both
move a rollout on. Each evaluation writes one decision record under the
rollout's prefix, created once (``IfNoneMatch``) under its number. The alias
itself changes only through ``chalicelib.aliases.store``, conditionally on the
revision the rollout wrote last, with the step's reason and the rollout as the
actor in the alias history; its shadow and capture settings are carried over.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalicelib import layout
from chalicelib.aliases.document import AliasDocument
from chalicelib.aliases.store import AliasStore
from chalicelib.documents import JsonDocuments
from chalicelib.errors import AliasNotFoundError, RolloutNotFoundError
from chalicelib.rollout.plan import ACTIVE, Rollout


def rollout_actor(rollout: Rollout) -> str:
    """Who the alias history names for a rollout's own changes."""
    return f"rollout {rollout.rollout_id} ({rollout.actor})"


class RolloutStore:
    """Rollouts of the aliases in ``aliases``'s registry bucket."""

    def __init__(self, aliases: AliasStore) -> None:
        self.aliases = aliases
        self.registry = aliases.registry
        self._documents = JsonDocuments(self.registry.s3, self.registry.bucket)

    def find(self, name: str, alias: str) -> tuple[Rollout, str] | None:
        """The alias's latest rollout and its ETag; None if it never had one."""
        found = self._documents.read(layout.rollout_key(name, alias))
        return None if found is None else (Rollout.from_dict(found[0]), found[1])

    def read(self, name: str, alias: str) -> tuple[Rollout, str]:
        """Like ``find``; RolloutNotFoundError if the alias never had a rollout."""
        found = self.find(name, alias)
        if found is None:
            raise RolloutNotFoundError(name, alias)
        return found

    def save(self, rollout: Rollout, etag: str | None) -> str:
        """Write ``rollout`` if its document is still at ``etag`` (None: if there
        is none); DocumentConflictError if someone wrote it first."""
        return self._documents.write(
            layout.rollout_key(rollout.name, rollout.alias),
            rollout.to_dict(),
            etag=etag,
        )

    def active(self) -> list[Rollout]:
        """Every rollout not yet finished, over every model's aliases."""
        found = []
        for name in self.registry.list_models():
            for document in self.aliases.list_aliases(name):
                current = self.find(name, document.alias)
                if current is not None and current[0].state in ACTIVE:
                    found.append(current[0])
        return found

    def record_decision(self, rollout: Rollout, record: Mapping[str, Any]) -> str:
        """Write the record of ``rollout``'s latest evaluation; its key."""
        key = layout.rollout_decision_key(
            rollout.name, rollout.alias, rollout.rollout_id, rollout.evaluations
        )
        self._documents.write(key, dict(record), etag=None)
        return key

    def decisions(self, rollout: Rollout) -> list[dict[str, Any]]:
        """Every decision record of ``rollout``, oldest first."""
        prefix = layout.rollout_decisions_prefix(
            rollout.name, rollout.alias, rollout.rollout_id
        )
        keys: list[str] = []
        paginator = self.registry.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.registry.bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        records = []
        for key in sorted(keys):
            found = self._documents.read(key)
            if found is not None:
                records.append(found[0])
        return records

    def alias(self, name: str, alias: str) -> AliasDocument | None:
        """The alias's head now (None if it was deleted)."""
        try:
            return self.aliases.get(name, alias)
        except AliasNotFoundError:
            return None

    def route(
        self,
        rollout: Rollout,
        weights: Mapping[int, float],
        reason: str,
        *,
        expected_revision: int,
    ) -> AliasDocument:
        """Route the alias by ``weights`` as the rollout, if it is still at
        ``expected_revision`` (AliasConflictError if not); shadow and capture
        stay as they are."""
        current = self.aliases.get(rollout.name, rollout.alias)
        return self.aliases.set_routing(
            rollout.name,
            rollout.alias,
            weights,
            shadow=current.shadow,
            actor=rollout_actor(rollout),
            reason=reason,
            expected_revision=expected_revision,
        )
