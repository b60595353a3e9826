"""``turnout.publish``: from a trained model to a served version in one call.

Converts the model to ONNX, checks on the sample that the ONNX model answers as
the original does (``turnout.publish.parity``), computes the training baseline,
registers the version with its provenance, parity result and baseline, and, when
asked, gives it a weight in an alias or makes it an alias's shadow.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from chalicelib.aliases.document import Shadow
from chalicelib.errors import AliasNotFoundError, TurnoutError
from chalicelib.evidence.baseline import Baseline, Kind, compute_baseline
from chalicelib.registry.manifest import Manifest
from chalicelib.registry.versions import Registry
from turnout.publish.convert import ConversionError, Converted, convert, from_onnx
from turnout.publish.parity import (
    DEFAULT_MAX_ROWS,
    DEFAULT_SEED,
    DEFAULT_TOLERANCE,
    ParityError,
    ParityReport,
    Tolerance,
    compare_classifier,
    compare_regressor,
    subset,
)
from turnout.publish.sample import (
    Precision,
    feature_names,
    feeds,
    input_columns,
    is_frame,
)

if TYPE_CHECKING:
    from chalicelib.aliases.store import AliasStore

Reference = Callable[[Any], Any]


class PublishOptionsError(TurnoutError):
    """Options of ``publish`` that do not go together."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"cannot publish: {reason}")


@dataclass(frozen=True)
class PublishResult:
    """What ``publish`` did: the version registered (None for a dry run), its
    manifest, the parity report, the ONNX bytes and the baseline."""

    version: int | None
    parity: ParityReport | None
    manifest: Manifest | None
    onnx: bytes
    baseline: Baseline

    def __str__(self) -> str:
        head = (
            "dry run: nothing registered"
            if self.version is None
            else f"registered version {self.version}"
        )
        parity = self.parity.text() if self.parity else "parity not checked"
        return f"{head}\n{parity}"


def publish(
    model: Any,
    *,
    name: str,
    sample: Any,
    labels: Any = None,
    alias: str | None = None,
    weight: float | None = None,
    shadow: str | tuple[str, float] | None = None,
    dry_run: bool = False,
    tolerance: float | None = None,
    reference: Reference | None = None,
    registry: Registry | None = None,
    bucket: str | None = None,
    endpoint_url: str | None = None,
    description: str = "",
    actor: str = "turnout.publish",
    precision: Precision | Literal["auto"] = "auto",
    class_names: list[str] | None = None,
    probability_tolerance: float = 1e-4,
    max_rows: int = DEFAULT_MAX_ROWS,
    seed: int = DEFAULT_SEED,
) -> PublishResult:
    """Convert ``model``, check it against the original on ``sample``, register it
    as the next version of ``name`` and route to it when asked.

    ``model`` is a fitted scikit-learn estimator or pipeline, a LightGBM model, or
    the bytes (or path) of an ONNX file with ``reference``: a callable taking the
    sample and returning what the ONNX model should (probabilities for a
    classifier, values for a regressor). ``labels`` are the sample's training
    labels, kept in the baseline. ``alias`` with ``weight`` adds the version to
    that alias's weights (creating the alias); ``shadow="prod:20"`` makes it the
    shadow of ``prod`` for 20 % of its traffic. ``class_names`` name the
    classes in ``classes_`` order when they are numbers (``target_names``).
    ``precision`` is the type of the model's numeric inputs: "auto" converts
    for float32 and, when that fails the check, for float64 (trees then split
    exactly where scikit-learn's do), keeping the one that passes.
    ``tolerance`` accepts differences up to that much (recorded in the
    manifest). ``registry`` (or ``bucket`` and ``endpoint_url``, else
    ``TURNOUT_MODEL_BUCKET``) says where.

    Raises ConversionError, SampleMismatchError, ParityError (nothing
    registered) and the registry's errors.
    """
    shadow_target = _parse_shadow(shadow)
    if (alias is None) != (weight is None):
        raise PublishOptionsError("alias and weight go together")
    tolerances = Tolerance(probability=probability_tolerance, accepted=tolerance)

    def converted_and_checked(
        chosen: Precision,
    ) -> tuple[Converted, ParityReport | None]:
        converted = _convert(model, sample, reference, chosen, class_names)
        # An ONNX file has no original to compare with but its reference, if any.
        original = model if converted.framework != "onnx" else reference
        report = check_parity(
            original,
            converted,
            sample,
            tolerance=tolerances,
            max_rows=max_rows,
            seed=seed,
        )
        return converted, report

    converted, parity = converted_and_checked(
        "float32" if precision == "auto" else precision
    )
    if (
        precision == "auto"
        and parity is not None
        and not parity.passed
        and converted.framework == "scikit-learn"
    ):
        converted, parity = _in_double_if_it_agrees(
            converted, parity, converted_and_checked
        )
    if parity is not None and not parity.passed:
        raise ParityError(parity)
    baseline = training_baseline(
        sample,
        labels,
        classifier=_is_classifier(converted, parity, labels),
        # Named as the model's inputs are fed (and batch files name them).
        names=feature_names(converted.inputs),
    )
    if dry_run:
        return PublishResult(None, parity, None, converted.onnx, baseline)
    registry = registry or _registry(bucket, endpoint_url)
    manifest = registry.register(
        name,
        converted.onnx,
        description=description,
        labels=list(converted.labels) if converted.labels else None,
        baseline=baseline,
        provenance=provenance(converted, parity, tolerance),
    )
    if alias is not None and weight is not None:
        _add_weight(registry, name, alias, manifest.version, weight, actor)
    if shadow_target is not None:
        _set_shadow(registry, name, shadow_target, manifest.version, actor)
    return PublishResult(manifest.version, parity, manifest, converted.onnx, baseline)


def check_parity(
    original: Any,
    converted: Converted,
    sample: Any,
    *,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    max_rows: int = DEFAULT_MAX_ROWS,
    seed: int = DEFAULT_SEED,
) -> ParityReport | None:
    """Run ``original`` (a model, or a reference callable) and the ONNX model on
    the sample's rows; None when there is nothing to compare against (an ONNX
    file published without a reference)."""
    if original is None:
        return None
    import onnxruntime

    session = onnxruntime.InferenceSession(
        converted.onnx, providers=["CPUExecutionProvider"]
    )
    rows, checked = subset(sample, max_rows, seed)
    outputs = session.run(None, feeds(rows, converted.inputs, converted.precision))
    output_names = [output.name for output in session.get_outputs()]
    notes = (f"inputs fed as {converted.precision}",)
    probabilities = _probabilities(output_names, outputs)
    if probabilities is not None and hasattr(original, "predict_proba"):
        onnx_labels = outputs[0] if outputs[0].ndim == 1 else None
        return compare_classifier(
            original.predict(rows),
            original.predict_proba(rows),
            np.argmax(probabilities, axis=1) if onnx_labels is None else onnx_labels,
            probabilities,
            checked=checked,
            tolerance=tolerance,
            notes=notes,
        )
    if hasattr(original, "predict"):
        expected = np.asarray(original.predict(rows))
    else:
        expected = np.asarray(original(rows))
        if probabilities is not None and expected.ndim == 2:
            # A reference gives probabilities: the label is the likeliest class.
            return compare_classifier(
                np.argmax(expected, axis=1),
                expected,
                np.argmax(probabilities, axis=1),
                probabilities,
                checked=checked,
                tolerance=tolerance,
                notes=notes,
            )
    return compare_regressor(
        expected,
        outputs[0],
        output=output_names[0],
        checked=checked,
        tolerance=tolerance,
        notes=notes,
    )


def training_baseline(
    sample: Any,
    labels: Any = None,
    *,
    classifier: bool = True,
    names: list[str] | None = None,
) -> Baseline:
    """The sample's statistics: one feature per DataFrame column (numbers numeric,
    the rest categorical) or per array column (``float_input_0``...), named
    ``names`` when given, and the labels' (class shares for a classifier, bins
    for a regressor)."""
    given = names
    if is_frame(sample):
        columns: list[Any] = [sample[column].to_numpy() for column in sample.columns]
        names = [str(column) for column in sample.columns]
    else:
        array = np.asarray(sample, dtype=np.float64)
        columns = [array[:, index] for index in range(array.shape[1])]
        names = feature_names(input_columns(sample))
    kinds: list[Kind] = [
        "numeric" if column.kind == "numeric" else "categorical"
        for column in input_columns(sample)
        for _ in range(column.width)
    ]
    return compute_baseline(
        columns,
        given if given is not None and len(given) == len(columns) else names,
        kinds,
        None if labels is None else np.asarray(labels),
        label_kind="categorical" if classifier else "numeric",
    )


def provenance(
    converted: Converted, parity: ParityReport | None, tolerance: float | None
) -> dict[str, Any]:
    """What the manifest records about where the version came from."""
    return {
        "publisher": "turnout.publish",
        "framework": converted.framework,
        "libraries": dict(converted.libraries),
        "input_precision": converted.precision,
        "classes": None if converted.classes is None else list(converted.classes),
        "parity": None if parity is None else parity.to_json(),
        "parity_checked": parity is not None,
        "accepted_tolerance": tolerance,
    }


def _convert(
    model: Any,
    sample: Any,
    reference: Reference | None,
    precision: Precision,
    class_names: list[str] | None,
) -> Converted:
    if isinstance(model, (bytes, bytearray)):
        return from_onnx(bytes(model), sample)
    if isinstance(model, (str, os.PathLike)):
        with open(model, "rb") as file:
            return from_onnx(file.read(), sample)
    if reference is not None:
        raise PublishOptionsError(
            "reference is for an ONNX file; a model Turnout converts is its own "
            "reference"
        )
    return convert(model, sample, precision=precision, class_names=class_names)


def _in_double_if_it_agrees(
    converted: Converted,
    parity: ParityReport,
    convert_and_check: Callable[[Precision], tuple[Converted, ParityReport | None]],
) -> tuple[Converted, ParityReport]:
    """The model converted for float64 inputs when that one passes the check
    (a forest's trees then split where scikit-learn's do), saying why; else the
    float32 one and its failing report."""
    try:
        wider, wider_parity = convert_and_check("float64")
    except ConversionError:
        return converted, parity
    if wider_parity is None or not wider_parity.passed:
        return converted, parity
    worst = max(
        (o for o in parity.outputs if o.output != "label"),
        key=lambda output: output.largest_difference,
    )
    note = (
        f"converted for float64 inputs: with float32 inputs {worst.output} "
        f"differed by up to {worst.largest_difference:.3g} (row {worst.row})"
    )
    return wider, replace(wider_parity, notes=(*wider_parity.notes, note))


def _is_classifier(
    converted: Converted, parity: ParityReport | None, labels: Any
) -> bool:
    if converted.classes is not None:
        return True
    if parity is not None:
        return parity.kind == "classifier"
    # An ONNX file published without a reference: judge by the labels.
    return labels is None or np.asarray(labels).dtype.kind != "f"


def _probabilities(
    names: list[str], outputs: list[npt.NDArray[Any]]
) -> npt.NDArray[Any] | None:
    for name, output in zip(names, outputs, strict=True):
        if output.ndim == 2 and "prob" in name.lower():
            return output
    if len(outputs) == 2 and outputs[0].ndim == 1 and outputs[1].ndim == 2:
        return outputs[1]
    return None


def _parse_shadow(shadow: str | tuple[str, float] | None) -> tuple[str, float] | None:
    if shadow is None or isinstance(shadow, tuple):
        return shadow
    alias, _, percent = shadow.partition(":")
    try:
        return alias, float(percent)
    except ValueError:
        raise PublishOptionsError(
            f"shadow is ALIAS:PERCENT (prod:20), not {shadow!r}"
        ) from None


def _add_weight(
    registry: Registry, name: str, alias: str, version: int, weight: float, actor: str
) -> None:
    store = _aliases(registry)
    try:
        current = store.get(name, alias)
    except AliasNotFoundError:
        store.set_routing(
            name,
            alias,
            {version: weight},
            actor=actor,
            reason="turnout.publish",
            expected_revision=0,
        )
        return
    store.set_routing(
        name,
        alias,
        {**current.weights, version: weight},
        shadow=current.shadow,
        actor=actor,
        reason="turnout.publish",
        expected_revision=current.revision,
    )


def _set_shadow(
    registry: Registry,
    name: str,
    target: tuple[str, float],
    version: int,
    actor: str,
) -> None:
    alias, percent = target
    store = _aliases(registry)
    current = store.get(name, alias)
    store.set_routing(
        name,
        alias,
        current.weights,
        shadow=Shadow(version, percent),
        actor=actor,
        reason="turnout.publish",
        expected_revision=current.revision,
    )


def _aliases(registry: Registry) -> AliasStore:
    from chalicelib.aliases.store import AliasStore

    return AliasStore(registry)


def _registry(bucket: str | None, endpoint_url: str | None) -> Registry:
    import boto3

    bucket = bucket or os.environ.get("TURNOUT_MODEL_BUCKET", "")
    if not bucket:
        raise PublishOptionsError(
            "no registry: pass registry=, bucket= or set TURNOUT_MODEL_BUCKET"
        )
    s3 = boto3.session.Session().client("s3", endpoint_url=endpoint_url or None)
    return Registry(s3, bucket)
