"""``turnout alias set/show/list/history/rollback``: weighted aliases."""

from __future__ import annotations

from collections.abc import Sequence

import click

from chalicelib.aliases.document import Revision, Shadow
from chalicelib.errors import ModelNotFoundError
from turnout.cli.main import Session, actor_option, cli, pass_session, reason_option
from turnout.cli.parsing import parse_shadow, parse_weights, using
from turnout.cli.render import (
    format_capture,
    format_routing,
    format_shadow,
    format_table,
)


@cli.group()
def alias() -> None:
    """Weighted aliases: set, show, list, history, rollback."""


@alias.command("set")
@click.argument("name")
@click.argument("alias")
@click.argument(
    "weights",
    nargs=-1,
    required=True,
    metavar="VERSION=WEIGHT...",
    callback=using(parse_weights),
)
@click.option(
    "--shadow",
    metavar="VERSION:PERCENT",
    callback=using(parse_shadow),
    help="Copy PERCENT % of the requests to VERSION; its answers are discarded.",
)
@click.option(
    "--expected-revision",
    type=click.IntRange(min=0),
    help="Refuse (conflict) unless the alias is at this revision (0: new alias).",
)
@reason_option
@actor_option
@pass_session
def alias_set(
    session: Session,
    name: str,
    alias: str,
    weights: dict[int, float],
    shadow: Shadow | None,
    expected_revision: int | None,
    reason: str,
    actor: str,
) -> None:
    """Route ALIAS of NAME by weights, for example: prod 1=90 2=10."""
    session.emit_alias(
        session.aliases.set_routing(
            name,
            alias,
            weights,
            shadow=shadow,
            actor=actor,
            reason=reason,
            expected_revision=expected_revision,
        )
    )


@alias.command("show")
@click.argument("name")
@click.argument("alias")
@pass_session
def alias_show(session: Session, name: str, alias: str) -> None:
    """Show ALIAS's current routing, shadow and capture."""
    session.emit_alias(session.aliases.get(name, alias))


@alias.command("list")
@click.argument("name")
@pass_session
def alias_list(session: Session, name: str) -> None:
    """List the aliases of NAME: routing, shadow and capture."""
    documents = session.aliases.list_aliases(name)
    if not documents and not session.registry.list_versions(name):
        raise ModelNotFoundError(name)
    table = format_table(
        ["ALIAS", "REVISION", "ROUTING", "SHADOW", "CAPTURE", "UPDATED", "ACTOR"],
        [
            (
                d.alias,
                d.revision,
                format_routing(d.weights),
                format_shadow(d.shadow),
                format_capture(d.capture),
                d.current.updated_at,
                d.current.actor,
            )
            for d in documents
        ],
    )
    session.emit(
        [d.to_dict() for d in documents],
        table if documents else [f"{name} has no aliases"],
    )


@alias.command("history")
@click.argument("name")
@click.argument("alias")
@pass_session
def alias_history(session: Session, name: str, alias: str) -> None:
    """Every revision of ALIAS, oldest first: when, who, routing, shadow,
    capture, why."""
    history: Sequence[Revision] = session.aliases.history(name, alias)
    session.emit(
        [revision.to_dict() for revision in history],
        format_table(
            ["REVISION", "UPDATED", "ACTOR", "ROUTING", "SHADOW", "CAPTURE", "REASON"],
            [
                (
                    r.revision,
                    r.updated_at,
                    r.actor,
                    format_routing(r.weights),
                    format_shadow(r.shadow),
                    format_capture(r.capture),
                    r.reason,
                )
                for r in history
            ],
        ),
    )


@alias.command("rollback")
@click.argument("name")
@click.argument("alias")
@click.option(
    "--to",
    "to_revision",
    type=click.IntRange(min=1),
    metavar="REVISION",
    help="The revision to restore (default: the one before the current).",
)
@reason_option
@actor_option
@pass_session
def alias_rollback(
    session: Session,
    name: str,
    alias: str,
    to_revision: int | None,
    reason: str,
    actor: str,
) -> None:
    """Restore an earlier revision of ALIAS as a new revision."""
    session.emit_alias(
        session.aliases.rollback(
            name, alias, actor=actor, reason=reason, to_revision=to_revision
        )
    )
