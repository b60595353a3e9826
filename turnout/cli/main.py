"""The ``turnout`` command: its group, its session and its error mapping.

Each command group lives in a module of its own (``registry``, ``aliases``,
``batch``, ``capture``, ``metrics``) that adds its commands to ``cli`` when it
is imported, at the end of this module. Commands parse their arguments
(``parsing``), call one library function and print the result (``render``), as
lines and tables for people or, with ``--json``, as one JSON document for
scripts. Every error ends the command with exit status 1 (2 for a usage error)
and one line on stderr; ``batch status`` also tells a job's state by its exit
status.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

import click
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
)

from chalicelib.aliases.document import AliasDocument
from chalicelib.aliases.store import AliasStore
from chalicelib.config import Settings
from chalicelib.documents import error_code
from chalicelib.errors import (
    AliasNotFoundError,
    ModelNotFoundError,
    TurnoutError,
    VersionNotFoundError,
)
from chalicelib.registry.versions import Registry
from turnout.cli.parsing import default_actor, parse_version_argument, using
from turnout.cli.render import alias_lines

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# How the dev stack's settings reach a shell (``make dev`` writes the file).
DEV_ENVIRONMENT_HINT = "(for the dev stack: `source .dev.env` after `make dev`)"


def missing_setting(what: str, option: str, variable: str) -> click.ClickException:
    """The error for a setting given neither as an option nor in the environment."""
    return click.ClickException(
        f"no {what}: pass {option} or set {variable} {DEV_ENVIRONMENT_HINT}"
    )


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


def pause(seconds: float) -> None:
    """How ``batch submit --wait`` waits between two reads of the job record
    (tests replace it with a function that delivers the pending events)."""
    time.sleep(seconds)


@dataclass
class Session:
    """What the global options decide; clients and stores are built on first use."""

    bucket: str | None
    endpoint_url: str | None
    as_json: bool

    @cached_property
    def s3(self) -> S3Client:
        return s3_client(self.endpoint_url)

    @property
    def has_registry(self) -> bool:
        return bool(self.bucket)

    @cached_property
    def registry(self) -> Registry:
        if not self.bucket:
            raise missing_setting("bucket", "--bucket", "TURNOUT_MODEL_BUCKET")
        settings = Settings.from_env()
        return Registry(self.s3, self.bucket, max_model_bytes=settings.max_model_bytes)

    @cached_property
    def aliases(self) -> AliasStore:
        return AliasStore(self.registry)

    def cloudwatch(self) -> Any:
        return cloudwatch_client(self.endpoint_url)

    def sleep(self, seconds: float) -> None:
        pause(seconds)

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

version_argument = click.argument("version", callback=using(parse_version_argument))


def _listing(names: Sequence[object], kind: str, empty: str) -> str:
    return f"{kind}: {', '.join(map(str, names))}" if names else empty


def what_exists(error: TurnoutError, session: Session | None) -> str:
    """An unknown model, version or alias's message, followed by what exists (as
    far as the registry can say: the message alone otherwise)."""
    if session is None or not session.has_registry:
        return error.message
    try:
        registry = session.registry
        if isinstance(error, ModelNotFoundError):
            known = _listing(registry.list_models(), "models", "no model is registered")
        elif isinstance(error, VersionNotFoundError):
            versions = registry.list_versions(error.name)
            known = _listing(versions, "versions", f"{error.name} has no versions")
        elif isinstance(error, AliasNotFoundError):
            names = [d.alias for d in session.aliases.list_aliases(error.name)]
            known = _listing(names, "aliases", f"{error.name} has no aliases")
        else:
            return error.message
    except (TurnoutError, BotoCoreError, ClientError):
        return error.message
    return f"{error.message}; {known}"


class TurnoutGroup(click.Group):
    """A group whose errors are one line on stderr, never a traceback."""

    def invoke(self, context: click.Context) -> Any:
        try:
            return super().invoke(context)
        except (ModelNotFoundError, VersionNotFoundError, AliasNotFoundError) as error:
            raise click.ClickException(
                what_exists(error, context.find_object(Session))
            ) from error

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
    """Register ONNX models and route their traffic with weighted aliases.

    The buckets come from TURNOUT_MODEL_BUCKET and TURNOUT_BATCH_BUCKET; for the
    dev stack, `source .dev.env` after `make dev` sets them.
    """
    context.obj = Session(bucket=bucket, endpoint_url=endpoint_url, as_json=as_json)


def main() -> NoReturn:
    """The console script's entry point."""
    cli.main(prog_name="turnout")


# Each command group adds its commands to ``cli`` when it is imported.
from turnout.cli import (  # noqa: E402, F401
    aliases,
    batch,
    capture,
    metrics,
    publish,
    registry,
)
from turnout.cli.report import report  # noqa: E402
from turnout.cli.rollout import rollout  # noqa: E402

cli.add_command(report)
cli.add_command(rollout)
