"""``turnout publish`` and ``turnout baseline set``: publish a trained model from
its file, give a version its training baseline.

Loading a pickled or joblib model runs the code inside it: publish only files
you made yourself (or trust as much as your own code).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Literal

import click

from chalicelib.evidence.baseline import Baseline
from turnout.cli.main import Session, cli, pass_session

PICKLE_WARNING = (
    "Loading a pickled or joblib model runs the code inside it: publish only your "
    "own files."
)
ONNX_SUFFIX = ".onnx"


def read_sample(path: Path, label_column: str | None) -> tuple[Any, Any]:
    """The CSV file's feature columns (a DataFrame) and its label column (None
    without ``label_column``). Needs pandas."""
    try:
        import pandas
    except ImportError:
        raise click.ClickException(
            "reading a CSV sample needs pandas: pip install pandas"
        ) from None
    frame = pandas.read_csv(path)
    if label_column is None:
        return frame, None
    if label_column not in frame.columns:
        raise click.ClickException(
            f"{path} has no column {label_column!r} (columns: "
            f"{', '.join(map(str, frame.columns))})"
        )
    return frame.drop(columns=label_column), frame[label_column].to_numpy()


def baseline_from_csv(path: Path, label_column: str | None) -> Baseline:
    """The training baseline of a CSV file (``turnout baseline set``,
    ``turnout register --baseline``)."""
    from turnout.publish.api import training_baseline

    features, labels = read_sample(path, label_column)
    classifier = labels is None or labels.dtype.kind != "f"
    return training_baseline(features, labels, classifier=classifier)


def load_model(path: Path) -> Any:
    """The model in ``path``: ONNX bytes, or the object a joblib or pickle file
    holds (running its code: see PICKLE_WARNING)."""
    if path.suffix == ONNX_SUFFIX:
        return path.read_bytes()
    try:
        import joblib

        return joblib.load(path)
    except ImportError:
        with path.open("rb") as file:
            return pickle.load(file)  # the user's own file: see PICKLE_WARNING


def sample_for(model: Any, features: Any) -> Any:
    """The sample as the model was trained on it: a DataFrame for a model that
    knows its column names (or an ONNX model with one input per column), else
    an array."""
    if isinstance(model, bytes):
        import onnxruntime

        session = onnxruntime.InferenceSession(
            model, providers=["CPUExecutionProvider"]
        )
        names = [spec.name for spec in session.get_inputs()]
        if len(names) > 1 or names[0] in features.columns:
            return features
        return features.to_numpy()
    if hasattr(model, "feature_names_in_"):
        return features
    return features.to_numpy()


@cli.command(
    "publish",
    help=(
        "Convert MODEL_FILE, check that it answers like the original on the "
        "--sample rows, register it as the next version of NAME with its training "
        "baseline, and route to it when asked.\n\nMODEL_FILE is a pickled or "
        "joblib scikit-learn estimator or pipeline, a LightGBM model, or an ONNX "
        "file (whose parity cannot be checked here: pass --reference-free, or "
        "publish it from Python with reference=). " + PICKLE_WARNING
    ),
)
@click.argument("name")
@click.argument(
    "model_file", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--sample",
    "sample_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A CSV file of training rows, with a header.",
)
@click.option("--label-column", help="The column of --sample that holds the label.")
@click.option("--alias", help="Give the new version --weight in this alias.")
@click.option("--weight", type=float, help="The new version's weight in --alias.")
@click.option(
    "--shadow", metavar="ALIAS:PERCENT", help="Shadow ALIAS with the new version."
)
@click.option("--dry-run", is_flag=True, help="Check everything, register nothing.")
@click.option(
    "--tolerance",
    type=float,
    help="Accept differences up to this much (recorded in the manifest).",
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "float32", "float64"]),
    default="auto",
    show_default=True,
    help="The type of the model's numeric inputs (auto: float32, else float64 "
    "when only that one answers like the original).",
)
@click.option(
    "--reference-free",
    is_flag=True,
    help="Publish an ONNX file without a parity check (there is no original).",
)
@pass_session
def publish_command(
    session: Session,
    name: str,
    model_file: Path,
    sample_file: Path,
    label_column: str | None,
    alias: str | None,
    weight: float | None,
    shadow: str | None,
    dry_run: bool,
    tolerance: float | None,
    precision: Literal["auto", "float32", "float64"],
    reference_free: bool,
) -> None:
    from turnout.publish.api import publish
    from turnout.publish.parity import ParityError

    if (alias is None) != (weight is None):
        raise click.UsageError("--alias and --weight go together")
    if shadow is not None and alias is not None:
        raise click.UsageError("give --alias with --weight, or --shadow, not both")
    model = load_model(model_file)
    if isinstance(model, bytes) and not reference_free:
        raise click.UsageError(
            f"{model_file} is an ONNX file: its answers cannot be checked against "
            "the original here. Pass --reference-free to publish it unchecked, or "
            "publish it from Python with reference=<the original's predict_proba>"
        )
    features, labels = read_sample(sample_file, label_column)
    try:
        result = publish(
            model,
            name=name,
            sample=sample_for(model, features),
            labels=labels,
            alias=alias,
            weight=weight,
            shadow=shadow,
            dry_run=dry_run,
            tolerance=tolerance,
            precision=precision,
            registry=None if dry_run else session.registry,
        )
    except ParityError as error:
        # The report is the answer: printed whole, then one line on stderr.
        session.emit(
            {"name": name, "version": None, "parity": error.report.to_json()},
            error.report.text().splitlines(),
        )
        raise click.ClickException(
            "the ONNX model does not answer like the original, so it was not "
            "published (the report above names the rows); --tolerance X accepts "
            "differences up to X, labels must still agree"
        ) from None
    payload = {
        "name": name,
        "version": result.version,
        "dry_run": dry_run,
        "parity": None if result.parity is None else result.parity.to_json(),
    }
    session.emit(payload, str(result).splitlines())


@cli.group("baseline")
def baseline() -> None:
    """A version's training baseline: what drift is measured against."""


@baseline.command("set")
@click.argument("name")
@click.argument("version", type=int)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--label-column", help="The column of FILE that holds the label.")
@pass_session
def set_baseline(
    session: Session,
    name: str,
    version: int,
    file: Path,
    label_column: str | None,
) -> None:
    """Give version VERSION of NAME the baseline of the CSV FILE. Set once: a
    version that has one keeps it."""
    document = baseline_from_csv(file, label_column)
    session.registry.set_baseline(name, version, document)
    session.emit(
        {"name": name, "version": version, "baseline": document.to_json()},
        [f"set the baseline of {name} version {version} ({document.rows} rows)"],
    )
