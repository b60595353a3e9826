"""JSON Lines chunks parsed into model inputs (pure): each row an array (the
features by position) or an object (by name, else by position)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from chalicelib.batch.tables.chunks import (
    ARRAY_ROW,
    OBJECT_ROW,
    OBJECT_ROW_PREFIXED,
    ChunkBuilder,
    ParsedChunk,
    RowError,
)
from chalicelib.batch.tables.columns import Feature
from chalicelib.values import LONG_NUMBER, MAX_NESTING, ValueRefused, show


@dataclass(frozen=True)
class JsonLinesTable:
    """JSON Lines rows: an array (the features by position, then anything else)
    or an object (keys named after the inputs, else its first values by position).
    """

    features: tuple[Feature, ...]
    prediction_keys: frozenset[str] = field(default_factory=frozenset)

    @property
    def width(self) -> int:
        return sum(feature.size for feature in self.features)

    def parse(self, chunk: bytes, first_row: int, first_line: int) -> ParsedChunk:
        rows = ChunkBuilder(self.features)
        row = first_row
        lines = chunk.split(b"\n")
        lines.pop()
        for offset, line in enumerate(lines):
            record = line.strip()
            if not record:
                continue
            raw = line.decode("utf-8").removesuffix("\r")
            try:
                kind, by_position, values = self._row(raw)
            except RowError as error:
                rows.reject(row, first_line + offset, raw, str(error))
            else:
                head = record[:-1]
                rows.add(row, first_line + offset, raw, head, values, by_position, kind)
            row += 1
        return rows.parsed(self._refusal, row - first_row, len(lines), with_kinds=True)

    def _row(self, record: str) -> tuple[int, bool, list[list[Any]]]:
        """The row's shape, whether it gives its values by position, and its
        values per feature; RowError for a row whose structure does not fit."""
        try:
            document = json.loads(record)
        except json.JSONDecodeError as error:
            raise RowError(
                f"not valid JSON: {error.msg} at column {error.colno}"
            ) from None
        except RecursionError:
            raise RowError("not valid JSON: nested too deeply") from None
        except ValueError:
            raise RowError(f"not valid JSON: {LONG_NUMBER}") from None
        if isinstance(document, list):
            return ARRAY_ROW, True, self._by_position(document, "the array")
        if isinstance(document, dict):
            clash = not self.prediction_keys.isdisjoint(document)
            kind = OBJECT_ROW_PREFIXED if clash else OBJECT_ROW
            if any(f.name in document for f in self.features):
                return kind, False, self._by_name(document)
            items = list(document.values())
            if len(items) < self.width:
                raise RowError(
                    f"missing key {self.features[0].name!r} (or give the model's "
                    f"{self.width} values by position; the object has {len(items)})"
                )
            return kind, True, self._by_position(items, "the object")
        kind_name = "null" if document is None else type(document).__name__
        raise RowError(f"a row must be a JSON array or object, not {kind_name}")

    def _by_position(self, items: list[Any], what: str) -> list[list[Any]]:
        if len(items) < self.width:
            raise RowError(
                f"{what} has {len(items)} values, the model takes {self.width}"
            )
        for index, item in enumerate(items[: self.width]):
            if isinstance(item, list):
                raise RowError(f"value {index} is {show(item)}, not a single value")
        result: list[list[Any]] = []
        index = 0
        for feature in self.features:
            result.append(items[index : index + feature.size])
            index += feature.size
        return result

    def _by_name(self, document: dict[str, Any]) -> list[list[Any]]:
        result: list[list[Any]] = []
        for feature in self.features:
            if feature.name not in document:
                raise RowError(f"missing key {feature.name!r}")
            items = _flatten(document[feature.name])
            if items is None:
                raise RowError(
                    f"key {feature.name!r} is nested more than {MAX_NESTING} lists "
                    f"deep, input expects {feature.size} values"
                )
            if len(items) != feature.size:
                raise RowError(
                    f"key {feature.name!r} has {len(items)} values, "
                    f"input expects {feature.size}"
                )
            result.append(items)
        return result

    def _refusal(self, by_position: bool, feature: int, error: ValueRefused) -> str:
        value = (error.position or (0,))[0]
        named = self.features[feature]
        if by_position:
            offset = sum(f.size for f in self.features[:feature])
            what = f"value {offset + value}"
        elif named.size == 1:
            what = f"key {named.name!r}"
        else:
            what = f"{named.name}[{value}]"
        return f"{what} is {error.shown}, {error.problem}"


def _flatten(value: Any) -> list[Any] | None:
    """Nested lists' values in order; None when nested deeper than MAX_NESTING.
    Without recursion: a row nested thousands deep is one rejected row."""
    flat: list[Any] = []
    stack = [iter([value])]
    end = object()
    while stack:
        item = next(stack[-1], end)
        if item is end:
            stack.pop()
        elif isinstance(item, list):
            if len(stack) > MAX_NESTING:
                return None
            stack.append(iter(item))
        else:
            flat.append(item)
    return flat
