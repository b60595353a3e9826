"""``turnout publish``, ``turnout baseline set`` and ``turnout register
--baseline`` on the moto registry, in-process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import joblib
import pytest
from click.testing import CliRunner, Result

from chalicelib.aliases.store import AliasStore
from chalicelib.registry.versions import Registry
from tests.demo_support import MODEL_BUCKET, MODELS
from tests.functional.publish_support import wine, wine_forest, wine_logistic
from turnout.cli import main as cli_module
from turnout.cli.main import cli

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

Turnout = Callable[..., Result]
IRIS_V1 = MODELS / "iris-v1.onnx"


@pytest.fixture
def turnout(s3: S3Client, monkeypatch: pytest.MonkeyPatch) -> Turnout:
    """``turnout(*args)``: run the command on the moto model bucket."""
    monkeypatch.setattr(cli_module, "s3_client", lambda endpoint_url: s3)

    def run(*args: str | Path) -> Result:
        arguments = ["--bucket", MODEL_BUCKET, *map(str, args)]
        return CliRunner().invoke(cli, arguments)

    return run


@pytest.fixture
def sample_csv(tmp_path: Path) -> Path:
    frame, labels = wine()
    path = tmp_path / "train.csv"
    frame.assign(cultivar=labels).to_csv(path, index=False)
    return path


def saved(tmp_path: Path, model: Any) -> Path:
    path = tmp_path / "model.joblib"
    joblib.dump(model, path)
    return path


def test_a_joblib_pipeline_is_published_with_its_baseline_and_weight(
    turnout: Turnout, registry: Registry, tmp_path: Path, sample_csv: Path
) -> None:
    result = turnout(
        "publish",
        "wine",
        saved(tmp_path, wine_logistic()),
        "--sample",
        sample_csv,
        "--label-column",
        "cultivar",
        "--alias",
        "staging",
        "--weight",
        "10",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[:3] == [
        "registered version 1",
        "parity PASSED: classifier, all 178 rows of the sample",
        "  label: agrees on every row",
    ]
    stored = registry.get_baseline("wine", 1)
    assert stored is not None and stored.label is not None and stored.rows == 178
    assert AliasStore(registry).get("wine", "staging").weights == {1: 10}


def test_a_dry_run_registers_nothing(
    turnout: Turnout, registry: Registry, tmp_path: Path, sample_csv: Path
) -> None:
    result = turnout(
        "publish",
        "wine",
        saved(tmp_path, wine_logistic()),
        "--sample",
        sample_csv,
        "--label-column",
        "cultivar",
        "--dry-run",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("dry run: nothing registered\n")
    assert registry.list_versions("wine") == []


def test_a_model_that_answers_differently_is_refused_with_its_rows(
    turnout: Turnout, registry: Registry, tmp_path: Path, sample_csv: Path
) -> None:
    result = turnout(
        "publish",
        "wine",
        saved(tmp_path, wine_forest()),
        "--sample",
        sample_csv,
        "--label-column",
        "cultivar",
        "--precision",
        "float32",
    )
    assert result.exit_code == 1
    assert "    row 39, probabilities: [0.88, 0.06, 0.06] -> [1, 0, 0], 0.12" in (
        result.stdout.splitlines()
    )
    assert result.stderr == (
        "error: the ONNX model does not answer like the original, so it was not "
        "published (the report above names the rows); --tolerance X accepts "
        "differences up to X, labels must still agree\n"
    )
    assert registry.list_versions("wine") == []


def test_an_onnx_file_needs_the_reference_free_acknowledgement(
    turnout: Turnout, registry: Registry, tmp_path: Path
) -> None:
    sample = tmp_path / "iris.csv"
    sample.write_text("a,b,c,d\n5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n")
    refused = turnout("publish", "iris", IRIS_V1, "--sample", sample)
    assert refused.exit_code == 2
    assert "cannot be checked against the original here" in refused.stderr
    published = turnout(
        "publish", "iris", IRIS_V1, "--sample", sample, "--reference-free"
    )
    assert published.exit_code == 0, published.output
    assert published.stdout == "registered version 1\nparity not checked\n"
    manifest = registry.get_manifest("iris", 1)
    assert manifest.provenance["parity_checked"] is False
    assert manifest.labels == ("setosa", "versicolor", "virginica")


def test_a_baseline_is_set_once(
    turnout: Turnout, registry: Registry, sample_csv: Path
) -> None:
    registry.register("wine", IRIS_V1.read_bytes())
    arguments = (
        "baseline",
        "set",
        "wine",
        "1",
        sample_csv,
        "--label-column",
        "cultivar",
    )
    first = turnout(*arguments)
    assert first.stdout == "set the baseline of wine version 1 (178 rows)\n"
    second = turnout(*arguments)
    assert second.exit_code == 1
    assert second.stderr == (
        "error: version 1 of 'wine' already has a baseline; a baseline is set once "
        "and never replaced\n"
    )


def test_register_stores_the_baseline_of_a_csv_file(
    turnout: Turnout, registry: Registry, sample_csv: Path
) -> None:
    result = turnout(
        "register",
        "wine",
        IRIS_V1,
        "--baseline",
        sample_csv,
        "--label-column",
        "cultivar",
    )
    assert result.exit_code == 0, result.output
    manifest = registry.get_manifest("wine", 1)
    assert manifest.baseline_sha256 is not None
    stored = registry.get_baseline("wine", 1)
    assert stored is not None and stored.feature("band").kind == "categorical"
