"""The parity check: does the ONNX model answer what the original does?

On the sample (all of it up to ``max_rows``, else a seeded random subset of
that many rows, said so in the report), the original's answers are compared
with onnxruntime's:

- a classifier's predicted label must agree on every row; its probabilities
  must be within ``probability_tolerance`` (absolute, 1e-4 by default);
- a regressor's values must satisfy ``|onnx - original| <= atol + rtol *
  |original|`` (``regression_atol``, ``regression_rtol``).

The report names the rows that disagree, the worst rows and the largest
difference per output. ``accepted`` (a stated tolerance) lets a model whose
differences stay within it pass; labels must agree all the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from chalicelib.errors import TurnoutError
from turnout.publish.sample import row_count, take_rows

DEFAULT_MAX_ROWS = 10_000
DEFAULT_SEED = 0
WORST_ROWS = 5
MAX_LISTED_ROWS = 20


@dataclass(frozen=True)
class Tolerance:
    """How far the ONNX answers may be from the original's."""

    probability: float = 1e-4
    regression_rtol: float = 1e-4
    regression_atol: float = 1e-3
    # A tolerance the user accepted for a model that fails the defaults: the
    # largest absolute difference allowed on any output (recorded in the manifest).
    accepted: float | None = None


DEFAULT_TOLERANCE = Tolerance()


@dataclass(frozen=True)
class CheckedRows:
    """The sample's rows the check ran on: their positions in the sample, the
    sample's size and the seed that drew them (None: all of them)."""

    positions: npt.NDArray[np.int64]
    in_sample: int
    seed: int | None


@dataclass(frozen=True)
class RowDifference:
    """One row's answers for one output: the original's and the ONNX model's."""

    row: int
    output: str
    original: Any
    onnx: Any
    difference: float


@dataclass(frozen=True)
class OutputSummary:
    """The largest difference on one output and the row where it is."""

    output: str
    largest_difference: float
    row: int
    allowed: str
    passed: bool


@dataclass(frozen=True)
class ParityReport:
    """The parity check's result; ``passed`` says whether the model may be
    published."""

    kind: Literal["classifier", "regressor"]
    rows_in_sample: int
    rows_checked: int
    subset_seed: int | None
    outputs: tuple[OutputSummary, ...]
    label_mismatches: tuple[RowDifference, ...]
    worst_rows: tuple[RowDifference, ...]
    tolerance: Tolerance
    passed: bool
    label_mismatch_count: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-able document (it goes in the manifest)."""
        document = asdict(self)
        document["outputs"] = [asdict(output) for output in self.outputs]
        plain: dict[str, Any] = _plain(document)
        return plain

    def text(self) -> str:
        """The report for people, as a notebook or the CLI prints it."""
        verdict = "PASSED" if self.passed else "FAILED"
        if self.subset_seed is None:
            rows = f"all {self.rows_checked} rows of the sample"
        else:
            rows = (
                f"{self.rows_checked} of {self.rows_in_sample} rows (a random subset, "
                f"seed {self.subset_seed})"
            )
        lines = [f"parity {verdict}: {self.kind}, {rows}"]
        for output in self.outputs:
            if output.output == "label" and self.kind == "classifier":
                lines.append(
                    "  label: agrees on every row"
                    if output.passed
                    else f"  label: differs on {self.label_mismatch_count} rows"
                )
                continue
            mark = "ok" if output.passed else "TOO FAR"
            lines.append(
                f"  {output.output}: largest difference {output.largest_difference:.3g}"
                f" (row {output.row}), allowed {output.allowed}: {mark}"
            )
        if self.label_mismatch_count:
            lines.append(
                f"  labels differ on {self.label_mismatch_count} rows "
                "(row: original -> onnx):"
            )
            lines.extend(
                f"    row {row.row}: {row.original!r} -> {row.onnx!r}"
                for row in self.label_mismatches
            )
        if self.worst_rows:
            lines.append("  worst rows (row, output: original -> onnx, difference):")
            lines.extend(
                f"    row {row.row}, {row.output}: {_short(row.original)} -> "
                f"{_short(row.onnx)}, {row.difference:.3g}"
                for row in self.worst_rows
            )
        lines.extend(f"  {note}" for note in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()


class ParityError(TurnoutError):
    """The converted model answers differently from the original: not published."""

    def __init__(self, report: ParityReport) -> None:
        super().__init__(
            "the ONNX model does not answer like the original, so it was not "
            "published (pass tolerance=X to accept differences up to X, labels must "
            "still agree):\n" + report.text()
        )
        self.report = report


def check_rows(
    rows_in_sample: int, max_rows: int = DEFAULT_MAX_ROWS, seed: int = DEFAULT_SEED
) -> tuple[npt.NDArray[np.int64], int | None]:
    """The rows the check runs on, and the seed when they are a random subset."""
    if rows_in_sample <= max_rows:
        return np.arange(rows_in_sample, dtype=np.int64), None
    chosen = np.random.default_rng(seed).choice(rows_in_sample, max_rows, replace=False)
    return np.sort(chosen).astype(np.int64), seed


def subset(
    sample: Any, max_rows: int = DEFAULT_MAX_ROWS, seed: int = DEFAULT_SEED
) -> tuple[Any, CheckedRows]:
    """The sample's rows to check, and which they are."""
    size = row_count(sample)
    rows, used_seed = check_rows(size, max_rows, seed)
    chosen = sample if used_seed is None else take_rows(sample, rows)
    return chosen, CheckedRows(rows, size, used_seed)


def compare_classifier(
    original_labels: Sequence[Any] | npt.NDArray[Any],
    original_probabilities: npt.NDArray[Any],
    onnx_labels: Sequence[Any] | npt.NDArray[Any],
    onnx_probabilities: npt.NDArray[Any],
    *,
    checked: CheckedRows,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    notes: Sequence[str] = (),
) -> ParityReport:
    """Labels must agree on every row, probabilities within the tolerance."""
    rows = checked.positions
    expected = np.asarray(original_probabilities, dtype=np.float64)
    actual = np.asarray(onnx_probabilities, dtype=np.float64)
    if expected.shape != actual.shape:
        raise ValueError(
            f"the original gives probabilities of shape {list(expected.shape)}, the "
            f"ONNX model {list(actual.shape)}"
        )
    original = [_plain(label) for label in np.asarray(original_labels).ravel()]
    converted = [_plain(label) for label in np.asarray(onnx_labels).ravel()]
    differing = [
        index
        for index, (a, b) in enumerate(zip(original, converted, strict=True))
        if str(a) != str(b)
    ]
    mismatches = tuple(
        RowDifference(int(rows[i]), "label", original[i], converted[i], 1.0)
        for i in differing[:MAX_LISTED_ROWS]
    )
    difference = np.abs(expected - actual).max(axis=1) if len(actual) else actual
    allowed = (
        tolerance.accepted if tolerance.accepted is not None else tolerance.probability
    )
    summary = _summary("probabilities", difference, rows, allowed, f"{allowed:g}")
    worst = _worst(difference, rows, "probabilities", expected, actual)
    return ParityReport(
        kind="classifier",
        rows_in_sample=checked.in_sample,
        rows_checked=len(rows),
        subset_seed=checked.seed,
        outputs=(
            OutputSummary(
                "label",
                float(bool(differing)),
                _first(differing, rows),
                "no difference",
                not differing,
            ),
            summary,
        ),
        label_mismatches=mismatches,
        label_mismatch_count=len(differing),
        worst_rows=worst,
        tolerance=tolerance,
        passed=summary.passed and not differing,
        notes=tuple(notes),
    )


def compare_regressor(
    original: npt.NDArray[Any],
    onnx: npt.NDArray[Any],
    *,
    output: str,
    checked: CheckedRows,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    notes: Sequence[str] = (),
) -> ParityReport:
    """Every value within ``atol + rtol * |original|`` (or the accepted tolerance)."""
    rows = checked.positions
    expected = np.asarray(original, dtype=np.float64).reshape(len(rows), -1)
    actual = np.asarray(onnx, dtype=np.float64).reshape(len(rows), -1)
    if expected.shape != actual.shape:
        raise ValueError(
            f"the original gives values of shape {list(expected.shape)}, the ONNX "
            f"model {list(actual.shape)}"
        )
    difference = np.abs(expected - actual).max(axis=1) if len(actual) else np.zeros(0)
    if tolerance.accepted is not None:
        allowed = np.full(len(rows), tolerance.accepted)
        spelled = f"{tolerance.accepted:g}"
    else:
        allowed = tolerance.regression_atol + tolerance.regression_rtol * np.abs(
            expected
        ).max(axis=1)
        spelled = (
            f"{tolerance.regression_atol:g} + {tolerance.regression_rtol:g}*|value|"
        )
    excess = difference - allowed
    passed = not bool((excess > 0).any())
    largest = int(np.argmax(difference)) if len(difference) else 0
    summary = OutputSummary(
        output,
        float(difference[largest]) if len(difference) else 0.0,
        int(rows[largest]) if len(rows) else 0,
        spelled,
        passed,
    )
    return ParityReport(
        kind="regressor",
        rows_in_sample=checked.in_sample,
        rows_checked=len(rows),
        subset_seed=checked.seed,
        outputs=(summary,),
        label_mismatches=(),
        worst_rows=_worst(difference, rows, output, expected, actual),
        tolerance=tolerance,
        passed=passed,
        notes=tuple(notes),
    )


def _summary(
    output: str,
    difference: npt.NDArray[Any],
    rows: npt.NDArray[np.int64],
    allowed: float,
    spelled: str,
) -> OutputSummary:
    if not len(difference):
        return OutputSummary(output, 0.0, 0, spelled, True)
    largest = int(np.argmax(difference))
    value = float(difference[largest])
    return OutputSummary(output, value, int(rows[largest]), spelled, value <= allowed)


def _worst(
    difference: npt.NDArray[Any],
    rows: npt.NDArray[np.int64],
    output: str,
    expected: npt.NDArray[Any],
    actual: npt.NDArray[Any],
) -> tuple[RowDifference, ...]:
    order = np.argsort(-difference, kind="stable")[:WORST_ROWS]
    return tuple(
        RowDifference(
            int(rows[i]),
            output,
            _plain(expected[i]),
            _plain(actual[i]),
            float(difference[i]),
        )
        for i in order
        if difference[i] > 0
    )


def _first(indices: Sequence[int], rows: npt.NDArray[np.int64]) -> int:
    return int(rows[indices[0]]) if indices else 0


def _short(value: Any) -> str:
    if isinstance(value, list):
        return (
            "["
            + ", ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in value)
            + "]"
        )
    return f"{value:.6g}" if isinstance(value, float) else repr(value)


def _plain(value: Any) -> Any:
    """numpy values as JSON-able Python ones."""
    if isinstance(value, np.ndarray):
        return [_plain(item) for item in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


Reference = Callable[[Any], Any]
