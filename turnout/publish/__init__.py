"""Publish a trained model: ``turnout.publish(model, name=..., sample=...)``.

This package is also the function: calling it runs ``turnout.publish.api.publish``.
``import turnout.publish.api`` binds ``turnout.publish`` to this package, so a
plain function of that name in ``turnout`` would be lost the moment a submodule
is imported; a callable package keeps ``turnout.publish(...)`` working whatever
was imported first, and loads the converters only when called.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, model: Any, **options: Any) -> Any:
        from turnout.publish.api import publish

        return publish(model, **options)


sys.modules[__name__].__class__ = _CallablePackage
