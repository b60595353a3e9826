"""``turnout register/models/versions/describe/delete/promote``: the registry."""

from __future__ import annotations

from pathlib import Path

import click

from chalicelib.errors import ModelNotFoundError, ModelTooLargeError
from turnout.cli.main import (
    Session,
    actor_option,
    cli,
    pass_session,
    reason_option,
    version_argument,
)
from turnout.cli.parsing import (
    parse_labels,
    parse_tags,
    parse_version_argument,
    using,
)
from turnout.cli.publish import baseline_from_csv
from turnout.cli.render import format_table, manifest_lines


@cli.command()
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--description", default="", help="What this version is.")
@click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="KEY=VALUE",
    callback=using(parse_tags),
    help="A tag to keep in the manifest (repeatable).",
)
@click.option(
    "--labels",
    metavar="A,B,C",
    callback=using(parse_labels),
    help="Class names, one per probability column (default: the model's own).",
)
@click.option(
    "--baseline",
    "baseline_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A CSV file of training rows: its statistics are stored with the version.",
)
@click.option("--label-column", help="The column of --baseline that holds the label.")
@pass_session
def register(
    session: Session,
    name: str,
    file: Path,
    description: str,
    tags: dict[str, str],
    labels: list[str] | None,
    baseline_file: Path | None,
    label_column: str | None,
) -> None:
    """Store FILE as the next version of model NAME and print its number.

    External data files FILE references (models over 2 GB) are read from beside
    it and stored with it."""
    registry = session.registry
    size = file.stat().st_size
    if size > registry.max_model_bytes:
        raise ModelTooLargeError(size, registry.max_model_bytes)
    baseline = (
        None
        if baseline_file is None
        else baseline_from_csv(baseline_file, label_column)
    )
    manifest = registry.register_file(
        name,
        str(file),
        description=description,
        tags=tags,
        labels=labels,
        baseline=baseline,
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
@click.argument("version", required=False, callback=using(parse_version_argument))
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
