"""``turnout batch submit/status/list/retry``: batch jobs, one per file uploaded
under incoming/ (the operations are ``chalicelib.batch.operations``)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from chalicelib.batch import operations
from chalicelib.batch.operations import JobStatus
from chalicelib.batch.record import RUNNING, JobRecord
from chalicelib.clock import utc_now
from chalicelib.metrics_query import parse_since
from turnout.cli.main import Session, cli, missing_setting, pass_session
from turnout.cli.parsing import using
from turnout.cli.render import job_lines, jobs_table

# Exit statuses of ``batch status``, one per state (1 and 2 stay every command's
# error and usage error).
BATCH_EXIT_CODES = {"succeeded": 0, "partial": 3, "failed": 4, "dead": 5, "running": 6}


def _require_batch_bucket(
    context: click.Context, parameter: click.Parameter, value: str | None
) -> str:
    if not value:
        raise missing_setting("batch bucket", "--batch-bucket", "TURNOUT_BATCH_BUCKET")
    return value


def batch_bucket_option[F: Callable[..., Any]](function: F) -> F:
    option = click.option(
        "--batch-bucket",
        envvar="TURNOUT_BATCH_BUCKET",
        show_envvar=True,
        callback=_require_batch_bucket,
        help="The batch bucket (uploads under incoming/).",
    )
    return option(function)


def _emit_job(session: Session, job: JobStatus) -> int:
    session.emit(job.to_dict(), job_lines(job))
    return BATCH_EXIT_CODES.get(job.state, 1)


@cli.group()
def batch() -> None:
    """Submit, follow and re-run batch jobs (one per file uploaded under
    incoming/MODEL/, incoming/MODEL@ALIAS/ or incoming/MODEL@VERSION/)."""


@batch.command("status")
@click.argument("key")
@batch_bucket_option
@pass_session
def batch_status(session: Session, key: str, batch_bucket: str) -> int:
    """Show the job of the file at KEY (incoming/...). The exit status says its
    state: 0 succeeded, 3 partial, 4 failed, 5 dead, 6 running."""
    return _emit_job(
        session, operations.status(session.s3, batch_bucket, key, now=utc_now())
    )


@batch.command("submit")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("model")
@click.option(
    "--name",
    help="The name under incoming/MODEL/ (default: the file's name with the start "
    "of its content's SHA-256, e.g. data-0123456789ab.csv).",
)
@click.option(
    "--wait", is_flag=True, help="Follow the job until it ends; exit with its state."
)
@batch_bucket_option
@pass_session
def batch_submit(
    session: Session,
    path: Path,
    model: str,
    name: str | None,
    wait: bool,
    batch_bucket: str,
) -> int:
    """Upload the local file PATH for MODEL (NAME, NAME@ALIAS or NAME@VERSION)
    to incoming/MODEL/ of the batch bucket, which starts its job; with --wait,
    follow it. The upload is named after the file and its content
    (data.csv -> data-0123456789ab.csv), so two different files of one name keep
    apart and the same content again is not run again: its existing job is
    shown (to run it again, pass another --name). The exit status says how it
    ended: 0 succeeded, 3 partial, 4 failed, 5 dead."""
    upload = operations.prepare(path, model, name=name)
    size = upload.size
    # Progress bars go to stderr (the result, JSON or not, to stdout); click draws
    # them on a terminal only.
    with click.progressbar(
        length=size, label=f"uploading {path.name}", file=sys.stderr
    ) as bar:
        submission = operations.submit(
            session.s3, batch_bucket, upload, now=utc_now(), on_bytes=bar.update
        )
    key, job = submission.key, submission.job
    where = f"s3://{batch_bucket}/{key}"
    if not submission.uploaded and not session.as_json:
        click.echo(
            f"{path} is already at {where} (the same content): not run again; to "
            "run it again, pass another --name"
        )
    if wait:
        if job is None or job.state == RUNNING:
            job = _follow(session, batch_bucket, key, submission.etag)
        session.emit({**job.to_dict(), "uploaded": submission.uploaded}, job_lines(job))
        return BATCH_EXIT_CODES.get(job.state, 1)
    if submission.uploaded:
        said = [f"uploaded {path} to {where} ({size} bytes)"]
    else:
        said = job_lines(job) if job else ["its job has not started yet"]
    if job is None:
        said.append(f"follow it with: turnout batch status {key}")
    session.emit(
        {
            "key": key,
            "etag": submission.etag,
            "size": size,
            "uploaded": submission.uploaded,
            "job": job.to_dict() if job else None,
        },
        said,
    )
    return 0


def _follow(session: Session, bucket: str, key: str, etag: str) -> JobStatus:
    """Follow the job of the upload ``etag`` at ``key`` with a progress bar over
    its bytes (on stderr)."""
    with click.progressbar(length=1000, label="predicting", file=sys.stderr) as bar:
        shown = 0

        def show(record: JobRecord) -> None:
            nonlocal shown
            progress = record.get("progress")
            if progress and progress["bytes"]:
                now = 1000 * progress["bytes_done"] // progress["bytes"]
                bar.update(now - shown)
                shown = now

        job = operations.follow(
            session.s3,
            bucket,
            key,
            etag,
            clock=utc_now,
            sleep=session.sleep,
            on_progress=show,
        )
        bar.update(1000 - shown)
    return job


@batch.command("list")
@click.option(
    "--since",
    default="1d",
    show_default=True,
    callback=using(parse_since),
    help="Jobs whose job record changed this recently (30m, 12h, 1d, 2w).",
)
@batch_bucket_option
@pass_session
def batch_list(session: Session, since: timedelta, batch_bucket: str) -> None:
    """List the batch jobs of the bucket: each file's state, rows and start."""
    jobs = operations.list_jobs(session.s3, batch_bucket, since=since, now=utc_now())
    session.emit(
        [job.to_dict() for job in jobs],
        jobs_table(jobs) if jobs else [f"no batch job in the last {since}"],
    )


@batch.command("retry")
@click.argument("key")
@batch_bucket_option
@pass_session
def batch_retry(session: Session, key: str, batch_bucket: str) -> None:
    """Run the job of the file at KEY again, without uploading it again: for a
    dead job or one that failed for a reason a retry may change."""
    previous = operations.retry(session.s3, batch_bucket, key, now=utc_now())
    session.emit(
        {"key": key, "retried": True, "previous": previous},
        [
            f"retrying {key}: the file was copied onto itself, so S3 sends the batch "
            "function a new event",
            f"follow it with: turnout batch status {key}",
        ],
    )
