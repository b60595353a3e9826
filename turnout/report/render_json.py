"""The report as one JSON document (``turnout report --json``)."""

from __future__ import annotations

import json
import math
from typing import Any


def render_json(report: dict[str, Any]) -> str:
    """The report as indented JSON; a non-finite number is written as null."""
    return json.dumps(_finite(report), indent=2)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
