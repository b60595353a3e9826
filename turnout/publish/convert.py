"""Models to ONNX: scikit-learn estimators and pipelines (skl2onnx), LightGBM
(onnxmltools), or an ONNX file the user exported with their own tool.

Each converter is an optional extra (``pip install turnout[sklearn]``,
``turnout[lightgbm]``); nothing here is imported by the Lambda package. A
converter's failure becomes a ConversionError naming the step that failed and
what to do, never the converter's traceback alone.
"""

from __future__ import annotations

import importlib.metadata
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chalicelib.errors import TurnoutError
from chalicelib.registry.versions import LABELS_METADATA_KEY
from turnout.publish.sample import ARRAY_INPUT, InputColumn, Precision, input_columns

# The opsets the demo models use; onnxruntime 1.32 runs both.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
# onnxmltools 1.16 converts LightGBM up to opset 15.
LIGHTGBM_OPSET = 15


class ConversionError(TurnoutError):
    """A model that could not be converted to ONNX, with what to do about it."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"could not convert the model to ONNX: {reason}")


@dataclass(frozen=True)
class Converted:
    """An ONNX model and how it was made.

    ``inputs`` are the model's inputs as the sample feeds them; ``classes`` the
    original's classes in the order of the probabilities output (None for a
    regressor); ``labels`` the class names the manifest gets (None when the
    served label is the class value itself).
    """

    onnx: bytes
    framework: str
    inputs: tuple[InputColumn, ...]
    precision: Precision
    classes: tuple[Any, ...] | None = None
    labels: tuple[str, ...] | None = None
    libraries: dict[str, str] = field(default_factory=dict)


def convert(
    model: Any,
    sample: Any,
    *,
    precision: Precision = "float32",
    class_names: Sequence[str] | None = None,
) -> Converted:
    """Convert a fitted scikit-learn estimator or pipeline, or a LightGBM model,
    to ONNX with inputs shaped like ``sample``: one per DataFrame column (numbers
    as ``precision`` floats, text as strings) or one ``float_input`` for an array.

    ``class_names`` name the classes in ``classes_`` order (default: the classes
    themselves, see ``class_names_of``).

    Raises ConversionError for a model no converter takes or a step that fails.
    """
    columns = input_columns(sample)
    module = type(model).__module__.split(".")[0]
    if module == "lightgbm":
        # One input of every feature, as onnxmltools builds it: a DataFrame of
        # numbers feeds it whole (its columns in order).
        columns = (InputColumn(ARRAY_INPUT, "numeric", _numeric_width(columns)),)
        data, libraries = _convert_lightgbm(model, columns, precision)
        framework = "lightgbm"
    elif module == "sklearn":
        data, libraries = _convert_sklearn(model, columns, precision)
        framework = "scikit-learn"
    else:
        raise ConversionError(
            f"{type(model).__name__} ({module}) has no converter in Turnout: export "
            "it to ONNX with its own tool and publish the file with "
            "reference=<the model's predict or predict_proba>"
        )
    classes = _classes(model)
    labels = class_names_of(classes) if class_names is None else tuple(class_names)
    if labels is not None and classes is not None and len(labels) != len(classes):
        raise ConversionError(
            f"{len(labels)} class names given, the model has {len(classes)} classes"
        )
    return Converted(
        onnx=set_labels_metadata(data, labels),
        framework=framework,
        inputs=columns,
        precision=precision,
        classes=classes,
        labels=labels,
        libraries={**libraries, framework: _version(framework)},
    )


def class_names_of(classes: Sequence[Any] | None) -> tuple[str, ...] | None:
    """The names the manifest gives the probability columns, so that REST and
    batch answer what ``predict`` does: text classes by name, integer classes
    0..n-1 as their numbers. Other integer classes keep no names (None): the
    model's label output is then the class itself, which the server passes on."""
    if classes is None:
        return None
    if all(isinstance(label, str) for label in classes):
        return tuple(classes)
    if list(classes) == list(range(len(classes))):
        return tuple(str(label) for label in classes)
    return None


def set_labels_metadata(data: bytes, labels: Sequence[str] | None) -> bytes:
    """``data`` with the class names in its metadata (``turnout.labels``), where
    ``turnout register`` finds them for a file registered on its own."""
    import onnx

    model = onnx.load_from_string(data)
    model.producer_name = model.producer_name or "turnout"
    onnx.helper.set_model_props(
        model, {LABELS_METADATA_KEY: ",".join(labels)} if labels else {}
    )
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _classes(model: Any) -> tuple[Any, ...] | None:
    classes = getattr(model, "classes_", None)
    if classes is None or not hasattr(model, "predict_proba"):
        return None
    return tuple(
        item.item() if isinstance(item, np.generic) else item for item in classes
    )


def _initial_types(columns: Sequence[InputColumn], precision: Precision) -> list[Any]:
    from skl2onnx.common.data_types import (
        DoubleTensorType,
        FloatTensorType,
        StringTensorType,
    )

    float_type = FloatTensorType if precision == "float32" else DoubleTensorType
    return [
        (
            column.name,
            (StringTensorType if column.kind == "string" else float_type)(
                [None, column.width]
            ),
        )
        for column in columns
    ]


def _convert_sklearn(
    model: Any, columns: Sequence[InputColumn], precision: Precision
) -> tuple[bytes, dict[str, str]]:
    try:
        from skl2onnx import to_onnx
    except ImportError:
        raise ConversionError(
            "skl2onnx is not installed: pip install 'turnout[sklearn]'"
        ) from None
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    # zipmap=False: probabilities as a plain 2-D tensor, not a list of maps.
    options = {id(final): {"zipmap": False}} if hasattr(final, "predict_proba") else {}
    try:
        onnx_model = to_onnx(
            model,
            initial_types=_initial_types(columns, precision),
            options=options,
            target_opset=TARGET_OPSET,
        )
    except Exception as error:
        raise _step_error(model, error, "skl2onnx") from None
    onnx_model.producer_name = "skl2onnx"
    _restore_input_names(onnx_model, columns)
    if precision == "float64":
        _exact_tree_thresholds(onnx_model, model)
    libraries = {name: _version(name) for name in ("skl2onnx", "onnx")}
    return bytes(onnx_model.SerializeToString()), libraries


def _convert_lightgbm(
    model: Any, columns: Sequence[InputColumn], precision: Precision
) -> tuple[bytes, dict[str, str]]:
    try:
        from onnxmltools import convert_lightgbm
        from onnxmltools.convert.common.data_types import FloatTensorType
    except ImportError:
        raise ConversionError(
            "onnxmltools is not installed: pip install 'turnout[lightgbm]'"
        ) from None
    (column,) = columns
    width = column.width
    if precision != "float32":
        raise ConversionError("a LightGBM model is converted for float32 inputs")
    booster = getattr(model, "booster_", model)
    try:
        onnx_model = convert_lightgbm(
            model if hasattr(model, "booster_") else booster,
            initial_types=[(column.name, FloatTensorType([None, width]))],
            zipmap=False,
            target_opset=LIGHTGBM_OPSET,
        )
    except Exception as error:
        raise _step_error(model, error, "onnxmltools") from None
    _dynamic_rows(onnx_model)
    libraries = {name: _version(name) for name in ("onnxmltools", "onnx")}
    return bytes(onnx_model.SerializeToString()), libraries


def _numeric_width(columns: Sequence[InputColumn]) -> int:
    text = [column.name for column in columns if column.kind != "numeric"]
    if text:
        raise ConversionError(
            f"a LightGBM model takes numbers only; {', '.join(text)} hold text: "
            "encode them as numbers first"
        )
    return sum(column.width for column in columns)


def _dynamic_rows(onnx_model: Any) -> None:
    """onnxmltools declares the label output with one row ([1]): make the row
    dimension dynamic, as the model's answers are (one label per input row)."""
    for output in onnx_model.graph.output:
        dims = output.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value"):
            dims[0].dim_param = "N"


def _exact_tree_thresholds(onnx_model: Any, model: Any) -> None:
    """Make a random forest's (or extra trees', or a decision tree's) ONNX trees
    split exactly where scikit-learn's do.

    skl2onnx writes a tree's thresholds as float32 even for double inputs, so a
    value between a threshold and its float32 rounding takes the other branch
    (on the wine data: probabilities 0.12 away). scikit-learn compares
    ``float32(x)`` with float64 thresholds; so does the rewritten node: its
    thresholds are scikit-learn's, as a double tensor (``ai.onnx.ml`` opset 3),
    and its input goes through float32 first. Left as it is when the model does
    not hold exactly one such estimator and the graph one tree node.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    forests = [step for step in _estimators(model) if _trees_of(step) is not None]
    tree_nodes = [
        node
        for node in onnx_model.graph.node
        if node.op_type in ("TreeEnsembleClassifier", "TreeEnsembleRegressor")
    ]
    if len(forests) != 1 or len(tree_nodes) != 1:
        return
    trees = _trees_of(forests[0]) or []
    (node,) = tree_nodes
    attributes = {attribute.name: attribute for attribute in node.attribute}
    thresholds = np.array(
        [
            trees[tree].tree_.threshold[index]
            for tree, index in zip(
                attributes["nodes_treeids"].ints,
                attributes["nodes_nodeids"].ints,
                strict=True,
            )
        ],
        dtype=np.float64,
    )
    kept = [
        attribute for attribute in node.attribute if attribute.name != "nodes_values"
    ]
    del node.attribute[:]
    node.attribute.extend(kept)
    node.attribute.append(
        helper.make_attribute(
            "nodes_values_as_tensor", numpy_helper.from_array(thresholds)
        )
    )
    source = node.input[0]
    as_float = helper.make_node(
        "Cast", [source], [f"{source}_as_float32"], to=TensorProto.FLOAT
    )
    as_double = helper.make_node(
        "Cast",
        [f"{source}_as_float32"],
        [f"{source}_as_compared"],
        to=TensorProto.DOUBLE,
    )
    node.input[0] = f"{source}_as_compared"
    position = list(onnx_model.graph.node).index(node)
    onnx_model.graph.node.insert(position, as_double)
    onnx_model.graph.node.insert(position, as_float)
    for opset in onnx_model.opset_import:
        if opset.domain == "ai.onnx.ml":
            opset.version = max(opset.version, 3)
    onnx.checker.check_model(onnx_model)


def _estimators(model: Any) -> list[Any]:
    """``model`` and every step inside it."""
    found = [model]
    if hasattr(model, "steps"):
        for _, step in model.steps:
            found.extend(_estimators(step))
    elif hasattr(model, "transformers_"):
        for _, step, _ in model.transformers_:
            found.extend(_estimators(step))
    return found


def _trees_of(estimator: Any) -> list[Any] | None:
    """A forest's trees (a decision tree is its own), None for anything else."""
    if hasattr(estimator, "tree_"):
        return [estimator]
    trees = getattr(estimator, "estimators_", None)
    if isinstance(trees, list) and trees and all(hasattr(t, "tree_") for t in trees):
        return trees
    return None


def _restore_input_names(onnx_model: Any, columns: Sequence[InputColumn]) -> None:
    """skl2onnx renames inputs it finds unsafe ('a/b' becomes 'a_b'): give them
    back the sample's column names, which REST keys and batch columns use."""
    renamed = {
        graph_input.name: column.name
        for graph_input, column in zip(onnx_model.graph.input, columns, strict=True)
        if graph_input.name != column.name
    }
    if not renamed:
        return
    for graph_input in onnx_model.graph.input:
        graph_input.name = renamed.get(graph_input.name, graph_input.name)
    for node in onnx_model.graph.node:
        for index, name in enumerate(node.input):
            if name in renamed:
                node.input[index] = renamed[name]


def _step_error(model: Any, error: Exception, converter: str) -> ConversionError:
    """Name the estimator the converter was working on when it failed (found in
    the traceback), where it sits in the model, and what to do."""
    failing = _failing_estimator(error.__traceback__)
    step = _step_path(model, failing) if failing is not None else None
    where = (
        f"step {step!r} ({type(failing).__name__})"
        if step
        else f"the {type(failing or model).__name__}"
    )
    # skl2onnx puts a node's every attribute in its message: keep the sentence.
    detail = " ".join(str(error).split()).split(" and attributes=")[0]
    if len(detail) > 200:
        detail = detail[:200] + "..."
    return ConversionError(
        f"{converter} {_version(converter)} failed on {where} with "
        f"{type(error).__name__}: {detail}. Replace that step with one the "
        f"converter supports (see the {converter} documentation), or export the "
        "model with another tool and publish the ONNX file with "
        "reference=<the model's predict_proba or predict>"
    )


def _failing_estimator(trace: types.TracebackType | None) -> Any:
    found = None
    while trace is not None:
        operator = trace.tb_frame.f_locals.get("operator")
        raw = getattr(operator, "raw_operator", None)
        if raw is not None:
            found = raw
        trace = trace.tb_next
    return found


def _step_path(model: Any, target: Any, prefix: str = "") -> str | None:
    """Where ``target`` sits in ``model``: 'classifier' or 'columns/numeric'."""
    if model is target:
        return prefix or None
    children: list[tuple[str, Any]] = []
    if hasattr(model, "steps"):
        children = list(model.steps)
    elif hasattr(model, "transformers_"):
        children = [(name, step) for name, step, _ in model.transformers_]
    for name, child in children:
        found = _step_path(child, target, f"{prefix}/{name}" if prefix else name)
        if found:
            return found
    return None


def _version(distribution: str) -> str:
    names = {"scikit-learn": "scikit-learn"}
    try:
        return importlib.metadata.version(names.get(distribution, distribution))
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def from_onnx(data: bytes, sample: Any) -> Converted:
    """An ONNX file the user exported: its inputs checked against ``sample``
    (names for a DataFrame, the feature count for an array, numbers or text).

    Raises SampleMismatchError when the sample cannot feed the model.
    """
    import onnxruntime

    from turnout.publish.sample import SampleMismatchError, is_frame

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    columns: list[InputColumn] = []
    precisions = set()
    for spec in session.get_inputs():
        width = spec.shape[1] if len(spec.shape) == 2 else 1
        if not isinstance(width, int):
            raise SampleMismatchError(
                f"input {spec.name!r} has no fixed number of features per row "
                f"({spec.shape})"
            )
        kind = "string" if spec.type == "tensor(string)" else "numeric"
        if spec.type == "tensor(double)":
            precisions.add("float64")
        elif kind == "numeric":
            precisions.add("float32")
        columns.append(InputColumn(spec.name, kind, width))  # type: ignore[arg-type]
    if is_frame(sample) and len(columns) > 1:
        missing = [c.name for c in columns if c.name not in map(str, sample.columns)]
        if missing:
            raise SampleMismatchError(
                f"the model's inputs {', '.join(missing)} are not columns of the sample"
            )
    precision: Precision = "float64" if precisions == {"float64"} else "float32"
    return Converted(
        onnx=data, framework="onnx", inputs=tuple(columns), precision=precision
    )
