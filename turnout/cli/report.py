"""``turnout report NAME``: compare an alias's versions on the evidence captured.

A command of its own, registered by ``turnout.cli.main`` with
``cli.add_command(report)``: it uses the group's session (``ctx.obj``: its
``s3`` client, model ``bucket`` and ``as_json``) when there is one, else
``TURNOUT_MODEL_BUCKET`` and ``AWS_ENDPOINT_URL``. The report's modules are
imported when it runs, so other commands do not pay for them.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from chalicelib.clock import utc_now

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_moment(text: str, now: datetime) -> datetime:
    """``24h``, ``30m``, ``7d`` (that long before ``now``) or an ISO 8601 time
    (UTC when it names no zone)."""
    found = DURATION.match(text.strip())
    if found:
        return now - timedelta(**{UNITS[found.group(2)]: float(found.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a duration (24h, 30m, 7d) nor an ISO 8601 time"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _s3_and_bucket(context: click.Context) -> tuple[S3Client, str]:
    session = context.find_root().obj
    if session is not None and hasattr(session, "s3") and session.bucket:
        return session.s3, session.bucket
    bucket = os.environ.get("TURNOUT_MODEL_BUCKET", "")
    if not bucket:
        raise click.ClickException(
            "no bucket: set TURNOUT_MODEL_BUCKET (for the dev stack: "
            "`source .dev.env` after `make dev`)"
        )
    import boto3

    endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
    return boto3.session.Session().client("s3", endpoint_url=endpoint), bucket


@click.command("report")
@click.argument("name")
@click.option("--alias", default="prod", show_default=True, help="The alias.")
@click.option(
    "--since",
    default="24h",
    show_default=True,
    help="Start of the window: a duration back from now (24h, 30m, 7d) or a time.",
)
@click.option("--until", default=None, help="End of the window (default: now).")
@click.option(
    "--capture-bucket",
    envvar="TURNOUT_CAPTURE_BUCKET",
    show_envvar=True,
    required=True,
    help="Where captures and labels are written.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the report as one self-contained HTML page.",
)
@click.pass_context
def report(
    context: click.Context,
    name: str,
    alias: str,
    since: str,
    until: str | None,
    capture_bucket: str,
    as_json: bool,
    html_file: Path | None,
) -> None:
    """Compare the versions behind NAME's alias on what it answered and the labels
    it received: accuracy, verdicts, latency, drift, shadows."""
    from turnout.report.compute import compute_report
    from turnout.report.render_html import render_html
    from turnout.report.render_json import render_json
    from turnout.report.render_text import render_text

    # ``turnout --json report`` (the group's flag) means the same as ``--json``.
    as_json = as_json or bool(getattr(context.find_root().obj, "as_json", False))
    now = utc_now()
    start = parse_moment(since, now)
    end = now if until is None else parse_moment(until, now)
    if start >= end:
        raise click.BadParameter(f"--since {since} is not before --until {until}")
    s3, bucket = _s3_and_bucket(context)
    found: dict[str, Any] = compute_report(
        s3,
        model_bucket=bucket,
        capture_bucket=capture_bucket,
        model=name,
        alias=alias,
        since=start,
        until=end,
    )
    if html_file is not None:
        html_file.write_text(render_html(found), encoding="utf-8")
    click.echo(render_json(found) if as_json else render_text(found))
    if html_file is not None and not as_json:
        click.echo(f"wrote {html_file}")
