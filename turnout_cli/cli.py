"""The ``turnout`` command: the model registry and its aliases from a shell.

A thin layer over ``Registry`` and ``AliasStore``: each command parses its
arguments, calls one method and prints the result, as lines and tables for people
or, with ``--json``, as one JSON document for scripts. Every error ends the
command with exit status 1 (2 for a usage error) and one line on stderr;
``batch status`` also tells a job's state by its exit status.
"""

from __future__ import annotations

import getpass
import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
)

from chalicelib.aliases.document import (
    CAPTURE_PARTS,
    AliasDocument,
    Capture,
    Revision,
    Shadow,
)
from chalicelib.aliases.store import AliasStore
from chalicelib.config import Settings
from chalicelib.documents import error_code
from chalicelib.errors import (
    InvalidNameError,
    ModelNotFoundError,
    ModelTooLargeError,
    TurnoutError,
)
from chalicelib.metrics_report import VersionMetrics, parse_since, version_metrics
from chalicelib.names import parse_version
from chalicelib.registry.manifest import Manifest, TensorSpec
from chalicelib.registry.versions import Registry

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from chalicelib.batch.record import JobRecord

# -- argument parsing (pure) ---------------------------------------------------


def _positive_integer(text: str, what: str) -> int:
    try:
        return parse_version(text)
    except InvalidNameError:
        raise ValueError(f"{what} {text!r} is not a positive integer") from None


def _number(text: str, what: str) -> float:
    """'90' -> 90, '2.5' -> 2.5: whole numbers stay integers in the alias document."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None
    return int(value) if value.is_integer() else value


def parse_version_argument(text: str) -> int:
    """'3' -> 3; ValueError unless ``text`` is a positive integer."""
    return _positive_integer(text, "version")


def parse_weight(text: str) -> tuple[int, float]:
    """'1=90' -> (1, 90): a version and its weight; ValueError otherwise.

    Only the syntax is checked here; the alias rules (non-negative weights with a
    positive sum) are the core's (``validate_routing``).
    """
    version, separator, weight = text.partition("=")
    if not separator:
        raise ValueError(f"{text!r} is not VERSION=WEIGHT (for example 1=90)")
    return _positive_integer(version, "version"), _number(weight, "weight")


def _unique_pairs[K, V](
    texts: Sequence[str],
    parse: Callable[[str], tuple[K, V]],
    describe: Callable[[K], str],
) -> dict[K, V]:
    """Parse each text into a (key, value) pair; ValueError on a repeated key."""
    pairs: dict[K, V] = {}
    for text in texts:
        key, value = parse(text)
        if key in pairs:
            raise ValueError(f"{describe(key)} is given more than once")
        pairs[key] = value
    return pairs


def parse_weights(texts: Sequence[str]) -> dict[int, float]:
    """('1=90', '2=10') -> {1: 90, 2: 10}; each version at most once."""
    return _unique_pairs(texts, parse_weight, lambda version: f"version {version}")


def parse_shadow(text: str) -> Shadow:
    """'3:5' -> Shadow(version=3, percent=5): version 3 gets a copy of 5 %."""
    version, separator, percent = text.partition(":")
    if not separator:
        raise ValueError(f"{text!r} is not VERSION:PERCENT (for example 3:5)")
    return Shadow(
        _positive_integer(version, "shadow version"),
        _number(percent.removesuffix("%"), "shadow percentage"),
    )


def parse_tag(text: str) -> tuple[str, str]:
    """'team=ml' -> ('team', 'ml'); the key must not be empty, the value may be."""
    key, separator, value = text.partition("=")
    if not separator or not key.strip():
        raise ValueError(f"{text!r} is not KEY=VALUE (for example team=ml)")
    return key.strip(), value.strip()


def parse_tags(texts: Sequence[str]) -> dict[str, str]:
    """('a=1', 'b=2') -> {'a': '1', 'b': '2'}; each key at most once."""
    return _unique_pairs(texts, parse_tag, lambda key: f"tag {key!r}")


def parse_labels(text: str) -> list[str]:
    """'a, b,c' -> ['a', 'b', 'c']; the registry checks them against the model."""
    return [label.strip() for label in text.split(",")]


def _using[T](
    parse: Callable[[Any], T],
) -> Callable[[click.Context, click.Parameter, Any], T | None]:
    """A click callback that parses a value with ``parse`` (None stays None)."""

    def callback(
        context: click.Context, parameter: click.Parameter, value: Any
    ) -> T | None:
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as error:
            raise click.BadParameter(str(error)) from None

    return callback


# -- output --------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """Left-aligned columns two spaces apart; empty cells show as '-'."""
    cells = [list(headers)] + [
        [str(value) if value not in (None, "") else "-" for value in row]
        for row in rows
    ]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    return [
        "  ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        ).rstrip()
        for row in cells
    ]


def _quantity(value: float) -> str:
    """90 -> '90', 90.0 -> '90', 2.5 -> '2.5': as an operator would type it."""
    return str(int(value)) if float(value).is_integer() else str(value)


def format_routing(weights: Mapping[int, float]) -> str:
    """{1: 90, 2: 10} -> '1=90 2=10', the syntax ``alias set`` takes."""
    return " ".join(f"{v}={_quantity(w)}" for v, w in sorted(weights.items()))


def format_shadow(shadow: Shadow | None) -> str:
    """Shadow(3, 5) -> '3:5', the syntax ``--shadow`` takes; '' for none."""
    return f"{shadow.version}:{_quantity(shadow.percent)}" if shadow else ""


def alias_lines(document: AliasDocument) -> list[str]:
    """An alias for people: its revision, who changed it and why, its traffic."""
    current = document.current
    total = sum(document.weights.values())
    lines = [
        f"{document.name}@{document.alias} revision {current.revision}",
        f"  updated  {current.updated_at} by {current.actor}",
    ]
    if current.reason:
        lines.append(f"  reason   {current.reason}")
    lines += format_table(
        ["VERSION", "WEIGHT", "TRAFFIC"],
        [
            (version, _quantity(weight), f"{100 * weight / total:.4g}%")
            for version, weight in sorted(document.weights.items())
        ],
    )
    if document.shadow:
        lines.append(
            f"shadow: version {document.shadow.version} gets a copy of "
            f"{_quantity(document.shadow.percent)}% of the requests"
        )
    return lines


def _specs(specs: Sequence[TensorSpec]) -> list[str]:
    return [
        "  " + line
        for line in format_table(
            ["NAME", "DATATYPE", "SHAPE"],
            [(s.name, s.datatype, f"[{', '.join(map(str, s.shape))}]") for s in specs],
        )
    ]


def manifest_lines(manifest: Manifest) -> list[str]:
    """A version for people: provenance, integrity and signature."""
    producer = " ".join(part for part in manifest.producer.values() if part)
    fields = [
        ("description", manifest.description),
        ("created", manifest.created_at),
        ("size", f"{manifest.size} bytes"),
        ("sha256", manifest.sha256),
        ("producer", producer),
        ("opset", ", ".join(f"{d} {v}" for d, v in sorted(manifest.opset.items()))),
        ("ir version", str(manifest.ir_version)),
        ("tags", ", ".join(f"{k}={v}" for k, v in sorted(manifest.tags.items()))),
        ("labels", ", ".join(manifest.labels or ())),
    ]
    width = max(len(key) for key, _ in fields)
    return (
        [f"{manifest.name} version {manifest.version}"]
        + [f"  {key.ljust(width)}  {value or '-'}" for key, value in fields]
        + ["inputs"]
        + _specs(manifest.inputs)
        + ["outputs"]
        + _specs(manifest.outputs)
    )


# -- the commands --------------------------------------------------------------


def default_actor() -> str:
    """Who is changing an alias when --actor is not given: the user, else 'unknown'."""
    try:
        return getpass.getuser() or "unknown"
    except Exception:  # no USER variable and no passwd entry (some containers)
        return "unknown"


def s3_client(endpoint_url: str | None) -> S3Client:
    """An S3 client on ``endpoint_url`` (None: AWS itself); tests replace this."""
    import boto3

    # A boto3 session of its own: the default one caches the credentials it found.
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url or None)


def cloudwatch_client(endpoint_url: str | None) -> Any:
    """A CloudWatch client on ``endpoint_url`` (None: AWS itself); tests replace
    this."""
    import boto3

    return boto3.session.Session().client(
        "cloudwatch", endpoint_url=endpoint_url or None
    )


@dataclass
class Session:
    """What the global options decide; the registry is built on first use."""

    bucket: str | None
    endpoint_url: str | None
    as_json: bool

    @cached_property
    def registry(self) -> Registry:
        if not self.bucket:
            raise click.ClickException(
                "no bucket: pass --bucket or set TURNOUT_MODEL_BUCKET"
            )
        settings = Settings.from_env()
        return Registry(
            s3_client(self.endpoint_url),
            self.bucket,
            max_model_bytes=settings.max_model_bytes,
        )

    @cached_property
    def aliases(self) -> AliasStore:
        return AliasStore(self.registry)

    def emit(self, payload: Any, lines: Iterable[str]) -> None:
        """Print ``payload`` as JSON with --json, else the human ``lines``."""
        if self.as_json:
            click.echo(json.dumps(payload, indent=2))
        else:
            for line in lines:
                click.echo(line)

    def emit_alias(self, document: AliasDocument) -> None:
        self.emit(document.to_dict(), alias_lines(document))


pass_session = click.make_pass_decorator(Session)

actor_option = click.option(
    "--actor",
    default=default_actor,
    show_default="the current user",
    help="Who makes the change, recorded in the alias history.",
)


reason_option = click.option(
    "--reason", default="", help="Why, recorded in the alias history."
)


version_argument = click.argument("version", callback=_using(parse_version_argument))


class TurnoutGroup(click.Group):
    """A group whose errors are one line on stderr, never a traceback."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        **extra: Any,
    ) -> NoReturn:
        extra["standalone_mode"] = False
        try:
            result = super().main(args, prog_name, **extra)
        except click.exceptions.NoArgsIsHelpError as error:
            error.show()
            sys.exit(error.exit_code)
        except click.UsageError as error:
            hint = f" (see '{error.ctx.command_path} --help')" if error.ctx else ""
            _fail(error.format_message() + hint, error.exit_code)
        except click.ClickException as error:
            _fail(error.format_message(), error.exit_code)
        except click.Abort:
            _fail("aborted", 1)
        except TurnoutError as error:
            _fail(error.message, 1)
        except ClientError as error:
            _fail(describe_client_error(error), 1)
        except NoCredentialsError:
            _fail(
                "no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (against `make dev`, any values work, e.g. "
                "testing/testing)",
                1,
            )
        except EndpointConnectionError as error:
            _fail(
                f"{error}: is the dev stack running (`make dev`)? Else check "
                "--endpoint-url and AWS_ENDPOINT_URL",
                1,
            )
        except (BotoCoreError, OSError, ValueError) as error:
            _fail(str(error) or type(error).__name__, 1)
        except Exception as error:
            _fail(f"unexpected {type(error).__name__}: {error}", 1)
        sys.exit(result if isinstance(result, int) else 0)


def describe_client_error(error: ClientError) -> str:
    """One line for an S3 error, naming the bucket when it is the problem."""
    if error_code(error) == "NoSuchBucket":
        bucket = error.response.get("Error", {}).get("BucketName")
        named = f"bucket {bucket!r}" if bucket else "the bucket"
        return f"{named} does not exist (NoSuchBucket)"
    return str(error)


def _fail(message: str, exit_code: int) -> NoReturn:
    click.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(exit_code)


@click.group(cls=TurnoutGroup, name="turnout")
@click.option(
    "--bucket",
    envvar="TURNOUT_MODEL_BUCKET",
    show_envvar=True,
    help="The registry's S3 bucket.",
)
@click.option(
    "--endpoint-url",
    envvar="AWS_ENDPOINT_URL",
    show_envvar=True,
    help="Another AWS endpoint (S3, CloudWatch), such as a local moto server.",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def cli(
    context: click.Context, bucket: str | None, endpoint_url: str | None, as_json: bool
) -> None:
    """Register ONNX models and route their traffic with weighted aliases."""
    context.obj = Session(bucket=bucket, endpoint_url=endpoint_url, as_json=as_json)


@cli.command()
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--description", default="", help="What this version is.")
@click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="KEY=VALUE",
    callback=_using(parse_tags),
    help="A tag to keep in the manifest (repeatable).",
)
@click.option(
    "--labels",
    metavar="A,B,C",
    callback=_using(parse_labels),
    help="Class names, one per probability column (default: the model's own).",
)
@pass_session
def register(
    session: Session,
    name: str,
    file: Path,
    description: str,
    tags: dict[str, str],
    labels: list[str] | None,
) -> None:
    """Store FILE as the next version of model NAME and print its number.

    External data files FILE references (models over 2 GB) are read from beside
    it and stored with it."""
    registry = session.registry
    size = file.stat().st_size
    if size > registry.max_model_bytes:
        raise ModelTooLargeError(size, registry.max_model_bytes)
    manifest = registry.register_file(
        name, str(file), description=description, tags=tags, labels=labels
    )
    session.emit(
        manifest.to_dict(), [f"registered {manifest.name} version {manifest.version}"]
    )


@cli.command()
@pass_session
def models(session: Session) -> None:
    """List the models, their versions and aliases."""
    rows = [
        (
            name,
            session.registry.list_versions(name),
            [document.alias for document in session.aliases.list_aliases(name)],
        )
        for name in session.registry.list_models()
    ]
    session.emit(
        [
            {"name": name, "versions": numbers, "aliases": aliases}
            for name, numbers, aliases in rows
        ],
        format_table(
            ["MODEL", "VERSIONS", "LATEST", "ALIASES"],
            [
                (name, len(numbers), numbers[-1], ", ".join(aliases))
                for name, numbers, aliases in rows
            ],
        )
        if rows
        else ["no models"],
    )


@cli.command()
@click.argument("name")
@pass_session
def versions(session: Session, name: str) -> None:
    """List the versions of model NAME and the aliases routing to each."""
    numbers = session.registry.list_versions(name)
    if not numbers:
        raise ModelNotFoundError(name)
    documents = session.aliases.list_aliases(name)
    rows = []
    for number in numbers:
        manifest = session.registry.get_manifest(name, number)
        routed_by = [d.alias for d in documents if number in d.current.versions()]
        rows.append((manifest, routed_by))
    session.emit(
        [{**manifest.to_dict(), "aliases": routed_by} for manifest, routed_by in rows],
        format_table(
            ["VERSION", "CREATED", "SIZE", "SHA256", "DESCRIPTION", "ALIASES"],
            [
                (
                    m.version,
                    m.created_at,
                    m.size,
                    m.sha256[:12],
                    m.description,
                    ", ".join(routed_by),
                )
                for m, routed_by in rows
            ],
        ),
    )


@cli.command()
@click.argument("name")
@click.argument("version", required=False, callback=_using(parse_version_argument))
@pass_session
def describe(session: Session, name: str, version: int | None) -> None:
    """Show the manifest of a version of NAME (by default the latest)."""
    if version is None:
        manifest = session.registry.latest_manifest(name)
    else:
        manifest = session.registry.get_manifest(name, version)
    session.emit(manifest.to_dict(), manifest_lines(manifest))


@cli.command()
@click.argument("name")
@version_argument
@actor_option
@pass_session
def delete(session: Session, name: str, version: int, actor: str) -> None:
    """Delete a VERSION of NAME that no alias routes to. Its number is not reused."""
    session.aliases.delete_version(name, version, actor=actor)
    session.emit(
        {"name": name, "version": version, "deleted": True},
        [f"deleted {name} version {version}"],
    )


@cli.command()
@click.argument("name")
@click.argument("alias")
@version_argument
@reason_option
@actor_option
@pass_session
def promote(
    session: Session, name: str, alias: str, version: int, reason: str, actor: str
) -> None:
    """Send all of ALIAS's traffic to VERSION (dropping its shadow)."""
    session.emit_alias(
        session.aliases.promote(name, alias, version, actor=actor, reason=reason)
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
    callback=_using(parse_weights),
)
@click.option(
    "--shadow",
    metavar="VERSION:PERCENT",
    callback=_using(parse_shadow),
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
    """Show ALIAS's current routing."""
    session.emit_alias(session.aliases.get(name, alias))


@alias.command("list")
@click.argument("name")
@pass_session
def alias_list(session: Session, name: str) -> None:
    """List the aliases of NAME and their routing."""
    documents = session.aliases.list_aliases(name)
    if not documents and not session.registry.list_versions(name):
        raise ModelNotFoundError(name)
    table = format_table(
        ["ALIAS", "REVISION", "ROUTING", "SHADOW", "UPDATED", "ACTOR"],
        [
            (
                d.alias,
                d.revision,
                format_routing(d.weights),
                format_shadow(d.shadow),
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
    """Every revision of ALIAS, oldest first: when, who, routing, why."""
    history: Sequence[Revision] = session.aliases.history(name, alias)
    session.emit(
        [revision.to_dict() for revision in history],
        format_table(
            ["REVISION", "UPDATED", "ACTOR", "ROUTING", "SHADOW", "REASON"],
            [
                (
                    r.revision,
                    r.updated_at,
                    r.actor,
                    format_routing(r.weights),
                    format_shadow(r.shadow),
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


# -- batch jobs ------------------------------------------------------------------

# Exit statuses of ``batch status``, one per state (1 and 2 stay every command's
# error and usage error).
BATCH_EXIT_CODES = {"succeeded": 0, "partial": 3, "failed": 4, "dead": 5, "running": 6}


def batch_job_lines(key: str, state: str, document: Mapping[str, Any]) -> list[str]:
    """A batch job for people: its state, what it ran, its counts, what to do."""
    rows = document.get("rows", {})
    target = document.get("version") or document.get("alias") or "-"
    lines = [
        f"{key}: {state}",
        f"  model     {document.get('model')} ({target})",
        f"  rows      {rows.get('read', 0)} read, {rows.get('predicted', 0)} "
        f"predicted, {rows.get('rejected', 0)} rejected",
        f"  run       {document.get('run_id')} started {document.get('started_at')}",
    ]
    progress = document.get("progress")
    if progress and state in ("running", "dead"):
        lines.append(f"  progress  {progress_text(progress)}")
    if document.get("shards"):
        lines.append(
            f"  shards    {len(document['shards'])} (their rows and seconds: --json)"
        )
    output, errors = document.get("output"), document.get("errors")
    if output:
        lines.append(f"  output    {output['key']} ({output['size']} bytes)")
    if errors:
        lines.append(f"  errors    {errors['key']} ({errors['rows']} rows)")
    if state == "running":
        expires = document.get("claim", {}).get("expires_at")
        lines.append(f"  claim     held until {expires}")
    elif state == "dead":
        expires = document.get("claim", {}).get("expires_at")
        lines += [
            f"  claim     expired at {expires} without a final manifest: the "
            "function stopped (out of memory, or killed)",
            f"  next      turnout batch retry {key}   (if it dies again, split the "
            "file or give the function more memory)",
        ]
    elif state == "failed":
        lines.append(f"  error     {document.get('error')}")
        if document.get("retryable"):
            lines.append(f"  next      turnout batch retry {key}")
        else:
            lines.append("  next      fix the file and upload it again")
    return lines


def progress_text(progress: Mapping[str, Any]) -> str:
    """'3/8 shards, 120/320 MB (37%), 4,100,000 rows' for a fanned-out job."""
    done, total = progress.get("bytes_done", 0), progress.get("bytes", 0)
    share = f" ({100 * done / total:.0f}%)" if total else ""
    return (
        f"{progress.get('shards_done', 0)}/{progress.get('shards', 0)} shards, "
        f"{done / 1e6:.0f}/{total / 1e6:.0f} MB{share}, "
        f"{progress.get('rows_done', 0):,} rows"
    )


def incoming_key(path: str, model: str) -> str:
    """Where ``turnout batch submit`` uploads the local file ``path`` for ``model``
    (``NAME``, ``NAME@ALIAS`` or ``NAME@VERSION``): incoming/MODEL/FILENAME."""
    from chalicelib.batch.keys import INCOMING

    return f"{INCOMING}{model}/{Path(path).name}"


# How long ``batch submit --wait`` waits between two reads of the manifest (tests
# replace it with a function that delivers the pending events instead).
def pause(seconds: float) -> None:
    time.sleep(seconds)


def batch_bucket_option[F: Callable[..., Any]](function: F) -> F:
    option = click.option(
        "--batch-bucket",
        envvar="TURNOUT_BATCH_BUCKET",
        show_envvar=True,
        required=True,
        help="The batch bucket (uploads under incoming/).",
    )
    return option(function)


@cli.group()
def batch() -> None:
    """Follow and re-run batch jobs (one per file uploaded under incoming/)."""


@batch.command("status")
@click.argument("key")
@batch_bucket_option
@pass_session
def batch_status(session: Session, key: str, batch_bucket: str) -> int:
    """Show the job of the file at KEY (incoming/...). The exit status says its
    state: 0 succeeded, 3 partial, 4 failed, 5 dead, 6 running."""
    from chalicelib.batch.keys import outputs_base
    from chalicelib.batch.record import Ledger, job_state
    from chalicelib.clock import utc_now
    from chalicelib.errors import BatchJobNotFoundError

    s3 = s3_client(session.endpoint_url)
    ledger = Ledger(s3, batch_bucket, outputs_base(key) + ".manifest.json")
    document = ledger.read()
    if document is None:
        raise BatchJobNotFoundError(key)
    state = job_state(document, utc_now())
    session.emit(
        {"key": key, "state": state, "manifest": document},
        batch_job_lines(key, state, document),
    )
    return BATCH_EXIT_CODES.get(state, 1)


@batch.command("submit")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.argument("model")
@click.option(
    "--wait", is_flag=True, help="Follow the job until it ends; exit with its state."
)
@batch_bucket_option
@pass_session
def batch_submit(
    session: Session, path: str, model: str, wait: bool, batch_bucket: str
) -> int:
    """Upload the local file PATH for MODEL (NAME, NAME@ALIAS or NAME@VERSION)
    under incoming/ of the batch bucket, which starts its job; with --wait, follow
    it. The exit status says how it ended: 0 succeeded, 3 partial, 4 failed."""
    from boto3.s3.transfer import TransferConfig

    from chalicelib.batch.keys import parse_key

    key = incoming_key(path, model)
    parse_key(key)  # refuse a bad model folder or format before uploading
    s3 = s3_client(session.endpoint_url)
    size = Path(path).stat().st_size
    # Progress bars go to stderr (the result, JSON or not, to stdout); click draws
    # them on a terminal only.
    with click.progressbar(
        length=size, label=f"uploading {Path(path).name}", file=sys.stderr
    ) as bar:
        s3.upload_file(
            path,
            batch_bucket,
            key,
            Callback=bar.update,
            Config=TransferConfig(multipart_threshold=64 * 1024 * 1024),
        )
    etag = s3.head_object(Bucket=batch_bucket, Key=key)["ETag"]
    if not wait:
        session.emit(
            {"key": key, "etag": etag, "size": size},
            [
                f"uploaded {path} to s3://{batch_bucket}/{key} ({size} bytes)",
                f"follow it with: turnout batch status {key}",
            ],
        )
        return 0
    document = follow_job(s3, batch_bucket, key, etag)
    state = str(document.get("status"))
    session.emit(
        {"key": key, "state": state, "manifest": document},
        batch_job_lines(key, state, document),
    )
    return BATCH_EXIT_CODES.get(state, 1)


def follow_job(s3: S3Client, bucket: str, key: str, etag: str) -> JobRecord:
    """The manifest of the job of the upload ``etag`` at ``key`` once it has
    ended, with a progress bar over its bytes meanwhile (on stderr)."""
    from chalicelib.batch.keys import outputs_base
    from chalicelib.batch.record import RUNNING, Ledger

    ledger = Ledger(s3, bucket, outputs_base(key) + ".manifest.json")
    done = 0
    with click.progressbar(length=1000, label="predicting", file=sys.stderr) as bar:
        while True:
            document = ledger.read()
            if document and document.get("input", {}).get("etag") == etag:
                if document.get("status") != RUNNING:
                    bar.update(1000 - done)
                    return document
                progress = document.get("progress")
                if progress and progress["bytes"]:
                    now = 1000 * progress["bytes_done"] // progress["bytes"]
                    bar.update(now - done)
                    done = now
            pause(1.0)


@batch.command("list")
@click.option(
    "--since",
    default="1d",
    show_default=True,
    callback=_using(parse_since),
    help="Jobs whose manifest changed this recently (30m, 12h, 1d, 2w).",
)
@batch_bucket_option
@pass_session
def batch_list(session: Session, since: timedelta, batch_bucket: str) -> None:
    """List the batch jobs of the bucket: each file's state, rows and start."""
    from chalicelib.batch.keys import INCOMING, OUTGOING
    from chalicelib.batch.record import Ledger, job_state
    from chalicelib.clock import utc_now

    s3 = s3_client(session.endpoint_url)
    now = utc_now()
    jobs = []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=batch_bucket, Prefix=OUTGOING
    ):
        for item in page.get("Contents", []):
            name = item["Key"]
            if (
                not name.endswith(".manifest.json")
                or item["LastModified"] < now - since
            ):
                continue
            document = Ledger(s3, batch_bucket, name).read()
            if document is None:
                continue
            key = INCOMING + name.removeprefix(OUTGOING).removesuffix(".manifest.json")
            jobs.append((key, job_state(document, now), document))
    rows = [
        (
            key,
            state,
            document.get("rows", {}).get("read", 0),
            document.get("rows", {}).get("rejected", 0),
            document.get("started_at"),
        )
        for key, state, document in sorted(jobs, key=lambda job: job[2]["started_at"])
    ]
    session.emit(
        [{"key": key, "state": state, "manifest": doc} for key, state, doc in jobs],
        format_table(("KEY", "STATE", "ROWS", "REJECTED", "STARTED"), rows)
        if rows
        else [f"no batch job in the last {since}"],
    )


@batch.command("retry")
@click.argument("key")
@batch_bucket_option
@pass_session
def batch_retry(session: Session, key: str, batch_bucket: str) -> None:
    """Run the job of the file at KEY again, without uploading it again: for a
    dead job or one that failed for a reason a retry may change."""
    from chalicelib.batch.job import retry_job
    from chalicelib.clock import utc_now

    s3 = s3_client(session.endpoint_url)
    previous = retry_job(s3, batch_bucket, key, now=utc_now())
    session.emit(
        {"key": key, "retried": True, "previous": previous},
        [
            f"retrying {key}: the file was copied onto itself, so S3 sends the batch "
            "function a new event",
            f"follow it with: turnout batch status {key}",
        ],
    )


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}%"


def _milliseconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def metrics_lines(name: str, figures: Sequence[VersionMetrics]) -> list[str]:
    """Each version's figures, for people."""
    if not figures:
        return [f"no metrics for {name} in that window"]
    headers = "VERSION REQUESTS ERRORS MEAN_MS P50_MS P99_MS SHADOW AGREEMENT"
    return format_table(
        headers.split(),
        [
            (
                f.version,
                f.requests,
                _percent(None if f.error_rate is None else 100 * f.error_rate),
                _milliseconds(f.latency_mean_ms),
                _milliseconds(f.latency_p50_ms),
                _milliseconds(f.latency_p99_ms),
                f.shadow_runs,
                _percent(f.shadow_agreement),
            )
            for f in figures
        ],
    )


@cli.command()
@click.argument("name")
@click.option("--alias", help="Only the requests this alias routed.")
@click.option(
    "--since",
    default="1h",
    show_default=True,
    callback=_using(parse_since),
    help="How far back: 30m, 1h, 7d...",
)
@pass_session
def metrics(session: Session, name: str, alias: str | None, since: timedelta) -> None:
    """Per version of NAME: requests, error rate, latency, shadow agreement
    (from CloudWatch)."""
    figures = version_metrics(
        cloudwatch_client(session.endpoint_url),
        name,
        alias=alias,
        since=since,
        now=datetime.now(UTC),
    )
    session.emit([f.to_dict() for f in figures], metrics_lines(name, figures))


@cli.group()
def capture() -> None:
    """Data capture per alias: set, show, off (written to TURNOUT_CAPTURE_BUCKET)."""


def parse_capture_parts(text: str) -> tuple[str, ...]:
    """'inputs,outputs' -> ('inputs', 'outputs'); ValueError for anything else."""
    parts = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [part for part in parts if part not in CAPTURE_PARTS]
    if unknown or not parts:
        raise ValueError(f"--keep takes {' and/or '.join(CAPTURE_PARTS)}, not {text!r}")
    return parts


def capture_lines(document: AliasDocument) -> list[str]:
    """What an alias captures, for people."""
    where = f"{document.name}@{document.alias} revision {document.revision}"
    found = document.capture
    if found is None:
        return [f"{where} captures nothing"]
    return [
        f"{where} captures {_quantity(found.percent)}% of the requests, "
        f"keeping {' and '.join(found.keep)}"
    ]


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
@click.argument("percent", callback=_using(lambda text: _number(text, "percentage")))
@click.option(
    "--keep",
    default=",".join(CAPTURE_PARTS),
    show_default=True,
    callback=_using(parse_capture_parts),
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
    """Capture PERCENT % of ALIAS's answered requests, for example: prod 10."""
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


def main() -> NoReturn:
    """The console script's entry point."""
    cli.main(prog_name="turnout")
