"""Deleting a version, safely while operators change aliases.

1. Refuse (VersionInUseError) while an alias routes to the version, by weight
   (even 0) or as its shadow.
2. Write the tombstone: from then on the version does not exist for anyone. The
   registry lists it no more, alias changes refuse it, and warm containers drop
   it when they revalidate their manifests.
3. Fence every alias head (``AliasStore.fence_heads``): an alias change that
   checked the version before the tombstone and writes its head after the fence
   finds the head changed, and conflicts. A head that routes to the version by
   now won that race: the tombstone is removed and the deletion refused.
4. Remove the manifest and the artifact. The claim and the tombstone stay, so
   the number is never given again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chalicelib.errors import VersionInUseError

if TYPE_CHECKING:
    from chalicelib.aliases.store import AliasStore


def delete_version(
    aliases: AliasStore, name: str, version: int, *, actor: str = ""
) -> None:
    """Delete ``version`` of ``name`` from ``aliases.registry``, ``actor`` named in
    its tombstone. VersionInUseError names the aliases that route to it; the
    errors of ``Registry.get_manifest`` when it does not exist (or no longer)."""
    in_use = aliases.aliases_routing_to(name, version)
    if in_use:
        raise VersionInUseError(name, version, in_use)
    registry = aliases.registry
    registry.write_tombstone(name, version, actor=actor)
    in_use = aliases.fence_heads(name, version)
    if in_use:
        registry.remove_tombstone(name, version)
        raise VersionInUseError(name, version, in_use)
    registry.remove_version(name, version)
