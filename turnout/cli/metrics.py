"""``turnout metrics``: each version's figures, read back from CloudWatch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click

from chalicelib.errors import ModelNotFoundError
from chalicelib.metrics_query import parse_since, version_metrics
from turnout.cli.main import Session, cli, pass_session
from turnout.cli.parsing import using
from turnout.cli.render import metrics_lines


@cli.command()
@click.argument("name")
@click.option("--alias", help="Only the requests this alias routed.")
@click.option(
    "--since",
    default="1h",
    show_default=True,
    callback=using(parse_since),
    help="How far back: 30m, 1h, 7d...",
)
@pass_session
def metrics(session: Session, name: str, alias: str | None, since: timedelta) -> None:
    """Per version of NAME: requests, error rate, latency, shadow agreement
    (from CloudWatch). With the registry's bucket set, an unknown NAME is an
    error naming the models there are."""
    figures = version_metrics(
        session.cloudwatch(), name, alias=alias, since=since, now=datetime.now(UTC)
    )
    unknown = (
        not figures
        and session.has_registry
        and not session.registry.list_versions(name)
    )
    if unknown:
        raise ModelNotFoundError(name)
    session.emit([f.to_dict() for f in figures], metrics_lines(name, figures))
