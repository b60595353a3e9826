"""Parsed chunks (pure): the rows of a chunk that go to the model, checked into
inputs all at once, and the rows rejected with their reasons."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from chalicelib.batch.tables.columns import Feature
from chalicelib.values import CheckedInputs, ValueRefused, to_array


@dataclass(frozen=True)
class Rejection:
    """A row that was not predicted: its number among the data rows, the line of
    the file it starts on, its text and why."""

    row: int
    line: int
    raw: str
    reason: str

    def to_json(self) -> bytes:
        record = {
            "row": self.row,
            "line": self.line,
            "raw": self.raw,
            "reason": self.reason,
        }
        return json.dumps(record, ensure_ascii=False).encode() + b"\n"


class Lines(Sequence[bytes]):
    """The heads of a chunk whose every line is an accepted row: the chunk and
    where its lines start and end, split into ``bytes`` only when read one by one
    (the renderer lays whole chunks out without splitting them)."""

    def __init__(self, text: bytes, starts: np.ndarray, ends: np.ndarray) -> None:
        self.text = text
        self.starts = starts
        self.ends = ends
        self._split: list[bytes] | None = None

    def __len__(self) -> int:
        return int(self.ends.size)

    def __getitem__(self, index: Any) -> Any:
        return self._lines()[index]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._lines())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return self._lines() == list(other)

    __hash__ = None  # type: ignore[assignment]

    def _lines(self) -> list[bytes]:
        if self._split is None:
            self._split = self.text.split(b"\n")[: self.ends.size]
        return self._split


# JSON Lines row shapes; each gets its own suffix template.
ARRAY_ROW, OBJECT_ROW, OBJECT_ROW_PREFIXED = 0, 1, 2


@dataclass
class ParsedChunk:
    """The rows of a chunk that go to the model, and the ones that do not.

    ``heads`` holds, per accepted row, the bytes its output row starts with (the
    record, without its line end or, in JSON, its closing bracket); ``kinds`` the
    JSON row shapes; ``rows`` counts records read, ``lines`` the lines consumed.
    """

    heads: Sequence[bytes]
    inputs: CheckedInputs
    rejections: list[Rejection]
    rows: int
    lines: int
    kinds: np.ndarray | None = None

    @property
    def accepted(self) -> int:
        return len(self.heads)


class RowError(ValueError):
    """Why one row cannot be predicted (the careful path's verdict)."""


class ChunkBuilder:
    """A chunk's rows as they are read: those refused for their structure, and the
    candidates whose values are then checked all at once (``_check_rows``).

    Each candidate keeps ``detail``, what a refusal's message needs (its CSV
    cells, or whether a JSON row gave its values by position)."""

    def __init__(self, features: tuple[Feature, ...]) -> None:
        self.features = features
        self.rejections: list[Rejection] = []
        self.numbers: list[tuple[int, int, str]] = []
        self.heads: list[bytes] = []
        self.values: list[list[list[Any]]] = []
        self.kinds: list[int] = []
        self.details: list[Any] = []

    def reject(self, row: int, line: int, raw: str, reason: str) -> None:
        self.rejections.append(Rejection(row, line, raw, reason))

    def add(
        self,
        row: int,
        line: int,
        raw: str,
        head: bytes,
        values: list[list[Any]],
        detail: Any,
        kind: int = ARRAY_ROW,
    ) -> None:
        self.numbers.append((row, line, raw))
        self.heads.append(head)
        self.values.append(values)
        self.details.append(detail)
        self.kinds.append(kind)

    def parsed(
        self,
        explain: Callable[[Any, int, ValueRefused], str],
        rows: int,
        lines: int,
        *,
        with_kinds: bool = False,
    ) -> ParsedChunk:
        """The chunk: candidates whose values pass as its inputs, the others
        rejected with ``explain(detail, feature, refusal)``."""
        inputs, refused = _check_rows(self.values, self.features)
        heads, kinds = self.heads, self.kinds
        if refused:
            dropped = set()
            for index, feature, error in refused:
                row, line, raw = self.numbers[index]
                reason = explain(self.details[index], feature, error)
                self.reject(row, line, raw, reason)
                dropped.add(index)
            self.rejections.sort(key=lambda rejection: rejection.row)
            keep = [index not in dropped for index in range(len(heads))]
            heads = [head for head, kept in zip(heads, keep, strict=True) if kept]
            kinds = [kind for kind, kept in zip(kinds, keep, strict=True) if kept]
        return ParsedChunk(
            heads,
            inputs,
            self.rejections,
            rows=rows,
            lines=lines,
            kinds=np.array(kinds, dtype=np.int8) if with_kinds else None,
        )


# -- values: rows of Python values checked into inputs --------------------------


def _check_rows(
    rows: list[list[list[Any]]], features: Sequence[Feature]
) -> tuple[CheckedInputs, list[tuple[int, int, ValueRefused]]]:
    """Rows (each a flat list of values per feature, of the feature's size) as
    inputs, and the rows refused: (row index, feature index, why).

    Each feature's column is checked at once; a column with a refused value is
    checked again row by row, to find every refused row (the rules are the same).
    """
    try:
        return _stack_columns(rows, features), []
    except ValueRefused:
        pass
    kept: list[list[Any]] = []
    refused: list[tuple[int, int, ValueRefused]] = []
    for index, row in enumerate(rows):
        for position, (feature, values) in enumerate(zip(features, row, strict=True)):
            try:
                to_array(values, feature.datatype, feature.allow_non_finite)
            except ValueRefused as error:
                refused.append((index, position, error))
                break
        else:
            kept.append(row)
    return _stack_columns(kept, features), refused


def _stack_columns(
    rows: list[list[list[Any]]], features: Sequence[Feature]
) -> CheckedInputs:
    inputs = CheckedInputs()
    for position, feature in enumerate(features):
        column = [row[position] for row in rows]
        array = to_array(column, feature.datatype, feature.allow_non_finite)
        inputs[feature.name] = array.reshape((len(rows), *feature.shape))
    return inputs
