"""Turnout for the people who train models: ``turnout.publish(model, ...)``.

``import turnout`` loads nothing else: ``turnout.publish`` is imported when it
is first used (module ``__getattr__``).
"""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    if name == "publish":
        return importlib.import_module("turnout.publish")
    raise AttributeError(f"module 'turnout' has no attribute {name!r}")
