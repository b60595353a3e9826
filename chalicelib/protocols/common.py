"""What both REST protocols share: the Codec a DataPlane runs a request through,
reading a JSON body and writing JSON values (pure).

Requests are decoded against the signature of the version that answers, and
every refusal is an InvalidInputError naming the field and what was expected,
before onnxruntime sees anything. What each datatype accepts is
:mod:`chalicelib.values`' rules, the ones batch files follow too. Where the
protocols leave a choice:

- JSON has no NaN or Infinity. The tokens ``NaN``, ``Infinity`` and ``-Infinity``
  (what Python's and numpy's JSON writers emit) are read, then refused unless the
  model takes them (see :mod:`chalicelib.values`). Non-finite outputs are written
  as ``null``, so answers are always strict JSON.
- Every request costs time linear in its size: JSON nesting, integer literals
  and the number of inputs are bounded before any per-value work.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from chalicelib.errors import InvalidInputError
from chalicelib.registry.manifest import Manifest, TensorSpec
from chalicelib.values import LONG_NUMBER, CheckedInputs


class Codec[Request](Protocol):
    """A protocol's decoder and encoder, around one run of the version that
    answers: the DataPlane resolves, decodes, runs and encodes through it.
    ``Request`` is what the protocol reads a body into before the version that
    answers is known."""

    def decode(
        self, request: Request, manifest: Manifest, *, max_rows: int
    ) -> CheckedInputs:
        """The request's inputs as arrays that fit ``manifest``'s signature;
        InvalidInputError or TooManyRowsError when they do not."""

    def outputs(self, request: Request) -> Sequence[str] | None:
        """The outputs the request asks for; None for all of them."""

    def encode(
        self,
        request: Request,
        outputs: Mapping[str, np.ndarray],
        manifest: Manifest,
        alias: str | None,
    ) -> dict[str, Any]:
        """The answer's JSON body: ``outputs`` of ``manifest``'s version, chosen
        through ``alias`` (None when the request named the version)."""


def parse_json(body: bytes, trailing_hint: str = "") -> Any:
    """The JSON document in ``body``; InvalidInputError naming the problem if it
    is not JSON, with ``trailing_hint`` when something follows the JSON or the
    body is not text (binary data, say). NaN and Infinity tokens are read (see
    the module docstring)."""
    if not body or body.isspace():
        raise InvalidInputError("body", "empty; send a JSON object")
    try:
        return json.loads(body)
    except json.JSONDecodeError as error:
        problem = (
            f"malformed JSON: {error.msg} at line {error.lineno} column {error.colno}"
        )
        if error.msg == "Extra data":
            problem += trailing_hint
    except UnicodeDecodeError:
        problem = "not UTF-8 text" + trailing_hint
    except RecursionError:
        problem = "malformed JSON: nested too deeply"
    except ValueError:
        problem = LONG_NUMBER  # the only other refusal
    raise InvalidInputError("body", problem)


def json_values(array: np.ndarray) -> Any:
    """An array as nested lists of JSON values: non-finite floats become null and
    bytes become text."""
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            values = array.astype(object)
            values[~finite] = None
            return values.tolist()
    elif array.dtype.kind in "OS":
        return np.frompyfunc(_text, 1, 1)(array).tolist()
    return array.tolist()


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def spec_names(specs: tuple[TensorSpec, ...]) -> str:
    """The tensors' names, comma-separated, for messages."""
    return ", ".join(spec.name for spec in specs)
