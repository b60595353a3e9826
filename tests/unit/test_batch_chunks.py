"""Rejected rows as the error report writes them (pure)."""

from __future__ import annotations

import json

from chalicelib.batch.tables.chunks import Rejection


def test_rejections_are_json_lines() -> None:
    rejection = Rejection(3, 4, "1,é", "column 'x' is empty")
    assert json.loads(rejection.to_json()) == {
        "row": 3,
        "line": 4,
        "raw": "1,é",
        "reason": "column 'x' is empty",
    }
