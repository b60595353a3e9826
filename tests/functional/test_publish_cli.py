"""``turnout publish`` and ``turnout baseline set`` on the moto registry, through
their click commands (the ``turnout`` group registers them)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
import joblib
import pytest
from click.testing import CliRunner, Result

from chalicelib.registry.versions import Registry
from tests.demo_support import model_bytes
from tests.functional.publish_support import wine, wine_forest, wine_logistic
from turnout.cli.publish import baseline, publish_command


class FakeSession:
    """The group's session as the commands see it: a registry and ``emit``."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def emit(self, payload: Any, lines: Iterable[str]) -> None:
        json.dumps(payload)  # what --json prints must be JSON
        for line in lines:
            click.echo(line)


def run(
    registry: Registry, command: click.Command, arguments: list[str | Path]
) -> Result:
    return CliRunner().invoke(
        command, [str(argument) for argument in arguments], obj=FakeSession(registry)
    )


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
    registry: Registry, tmp_path: Path, sample_csv: Path
) -> None:
    result = run(
        registry,
        publish_command,
        [
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
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:2] == [
        "registered version 1",
        "parity PASSED: classifier, all 178 rows of the sample",
    ]
    stored = registry.get_baseline("wine", 1)
    assert stored is not None and stored.label is not None
    assert stored.label.name == "label" and stored.rows == 178


def test_a_dry_run_needs_no_registry_and_registers_nothing(
    registry: Registry, tmp_path: Path, sample_csv: Path
) -> None:
    result = run(
        registry,
        publish_command,
        [
            "wine",
            saved(tmp_path, wine_logistic()),
            "--sample",
            sample_csv,
            "--label-column",
            "cultivar",
            "--dry-run",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("dry run: nothing registered\n")
    assert registry.list_versions("wine") == []


def test_a_model_that_answers_differently_is_refused_with_its_rows(
    registry: Registry, tmp_path: Path, sample_csv: Path
) -> None:
    result = run(
        registry,
        publish_command,
        [
            "wine",
            saved(tmp_path, wine_forest()),
            "--sample",
            sample_csv,
            "--label-column",
            "cultivar",
            "--precision",
            "float32",
        ],
    )
    assert result.exit_code == 1
    assert "Error: the ONNX model does not answer like the original" in result.output
    assert "row 39, probabilities: [0.88, 0.06, 0.06] -> [1, 0, 0], 0.12" in (
        result.output
    )
    assert registry.list_versions("wine") == []


def test_an_onnx_file_needs_the_reference_free_acknowledgement(
    registry: Registry, tmp_path: Path
) -> None:
    path = tmp_path / "iris.onnx"
    path.write_bytes(model_bytes("iris-v1.onnx"))
    sample = tmp_path / "iris.csv"
    sample.write_text("a,b,c,d\n5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n")
    refused = run(registry, publish_command, ["iris", path, "--sample", sample])
    assert refused.exit_code == 2
    assert "cannot be checked against the original here" in refused.output
    published = run(
        registry,
        publish_command,
        ["iris", path, "--sample", sample, "--reference-free"],
    )
    assert published.exit_code == 0, published.output
    assert published.output == "registered version 1\nparity not checked\n"
    manifest = registry.get_manifest("iris", 1)
    assert manifest.provenance["parity_checked"] is False
    assert manifest.labels == ("setosa", "versicolor", "virginica")


def test_a_baseline_is_set_once(
    registry: Registry, tmp_path: Path, sample_csv: Path
) -> None:
    registry.register("wine", model_bytes("iris-v1.onnx"))
    arguments: list[str | Path] = [
        "set",
        "wine",
        "1",
        sample_csv,
        "--label-column",
        "cultivar",
    ]
    first = run(registry, baseline, arguments)
    assert first.output == "set the baseline of wine version 1 (178 rows)\n"
    second = run(registry, baseline, arguments)
    assert second.exit_code == 1
    assert second.output == (
        "Error: version 1 of 'wine' already has a baseline; a baseline is set once "
        "and never replaced\n"
    )
