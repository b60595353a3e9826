"""``turnout capture set/show/off``: data capture per alias."""

from __future__ import annotations

import click

from chalicelib.aliases.document import CAPTURE_PARTS, AliasDocument, Capture
from turnout.cli.main import Session, actor_option, cli, pass_session, reason_option
from turnout.cli.parsing import parse_capture_parts, parse_capture_percent, using
from turnout.cli.render import capture_lines


@cli.group()
def capture() -> None:
    """Data capture per alias: set, show, off (written to TURNOUT_CAPTURE_BUCKET)."""


def _emit_capture(session: Session, document: AliasDocument) -> None:
    found = document.capture
    session.emit(
        {
            "name": document.name,
            "alias": document.alias,
            "revision": document.revision,
            "capture": found.to_dict() if found else None,
        },
        capture_lines(document),
    )


@capture.command("set")
@click.argument("name")
@click.argument("alias")
@click.argument("percent", callback=using(parse_capture_percent))
@click.option(
    "--keep",
    default=",".join(CAPTURE_PARTS),
    show_default=True,
    callback=using(parse_capture_parts),
    help="What to write of each captured request: inputs, outputs or both.",
)
@reason_option
@actor_option
@pass_session
def capture_set(
    session: Session,
    name: str,
    alias: str,
    percent: float,
    keep: tuple[str, ...],
    reason: str,
    actor: str,
) -> None:
    """Capture PERCENT % (0 < PERCENT <= 100) of ALIAS's answered requests, for
    example: prod 10."""
    _emit_capture(
        session,
        session.aliases.set_capture(
            name, alias, Capture(percent, keep), actor=actor, reason=reason
        ),
    )


@capture.command("show")
@click.argument("name")
@click.argument("alias")
@pass_session
def capture_show(session: Session, name: str, alias: str) -> None:
    """Show what ALIAS captures."""
    _emit_capture(session, session.aliases.get(name, alias))


@capture.command("off")
@click.argument("name")
@click.argument("alias")
@reason_option
@actor_option
@pass_session
def capture_off(
    session: Session, name: str, alias: str, reason: str, actor: str
) -> None:
    """Stop capturing ALIAS's requests."""
    _emit_capture(
        session,
        session.aliases.set_capture(name, alias, None, actor=actor, reason=reason),
    )
