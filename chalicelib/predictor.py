"""The prediction core: resolve who answers (and which shadow gets a copy),
check the inputs, run.

Called the same way by the REST protocols and by batch jobs; it never sees an
HTTP request or an S3 event, and they never see onnxruntime. Shadow runs happen
after the answer (``chalicelib.shadow``).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from chalicelib.aliases.cache import AliasCache
from chalicelib.aliases.document import AliasDocument
from chalicelib.datatypes import V2_TO_NUMPY
from chalicelib.errors import (
    AliasNotFoundError,
    InvalidInputError,
    ModelExecutionError,
    ModelNotFoundError,
)
from chalicelib.names import validate_model_name
from chalicelib.registry.cache import ManifestCache
from chalicelib.registry.manifest import Manifest, Signature, classifier_outputs
from chalicelib.registry.versions import Registry
from chalicelib.sessions import ModelCache
from chalicelib.traffic import choose_version, sampled
from chalicelib.values import CheckedInputs


# Built for every request: a frozen dataclass would cost three times as much.
@dataclass(slots=True)
class Target:
    """The version that answers a request, how it was chosen, and the version
    sampled to get a copy of it as shadow."""

    manifest: Manifest
    alias: str | None
    shadow: int | None = None

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version


@dataclass(slots=True)
class Prediction:
    target: Target
    outputs: dict[str, np.ndarray]
    latency_ms: float


def check_inputs(signature: Signature, inputs: Mapping[str, np.ndarray]) -> None:
    """Raise InvalidInputError unless ``inputs`` fit the signature exactly:
    every input present, none unknown, same rank, fixed dimensions equal,
    the same batch size for all, and the datatype's numpy dtype."""
    expected = {spec.name for spec in signature.inputs}
    unknown = sorted(set(inputs) - expected)
    if unknown:
        raise InvalidInputError(
            unknown[0], f"unknown input; the model takes {', '.join(sorted(expected))}"
        )
    batch_sizes: set[int] = set()
    for spec in signature.inputs:
        if spec.name not in inputs:
            raise InvalidInputError(spec.name, "missing input")
        array = inputs[spec.name]
        if array.ndim != len(spec.shape):
            raise InvalidInputError(
                spec.name,
                f"has {array.ndim} dimensions {list(array.shape)}, "
                f"model expects {len(spec.shape)} {list(spec.shape)}",
            )
        for axis, (got, want) in enumerate(zip(array.shape, spec.shape, strict=True)):
            if want >= 0 and got != want:
                what = "features per row" if axis == len(spec.shape) - 1 else "entries"
                raise InvalidInputError(
                    spec.name,
                    f"has {got} {what} on axis {axis}, model expects {want}",
                )
        if spec.shape and spec.shape[0] < 0:
            batch_sizes.add(array.shape[0])
        wanted = V2_TO_NUMPY.get(spec.datatype)
        if wanted is not None and array.dtype != wanted:
            raise InvalidInputError(
                spec.name, f"has dtype {array.dtype}, model expects {spec.datatype}"
            )
    if len(batch_sizes) > 1:
        raise InvalidInputError(
            "inputs", f"inputs have different row counts {sorted(batch_sizes)}"
        )


def primary_version(document: AliasDocument) -> int:
    """The alias's heaviest version (the lowest number among equals)."""
    return max(sorted(document.weights), key=lambda version: document.weights[version])


class Predictor:
    """Resolves versions through the registry and aliases and runs them."""

    def __init__(
        self,
        registry: Registry,
        aliases: AliasCache,
        manifests: ManifestCache,
        models: ModelCache,
        *,
        default_alias: str,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.registry = registry
        self.aliases = aliases
        self.manifests = manifests
        self.models = models
        self.default_alias = default_alias
        self._draw = draw
        self._lock = threading.Lock()

    # -- resolving -------------------------------------------------------------

    def manifest(self, name: str, version: int) -> Manifest:
        """A version's manifest, from the container's ManifestCache."""
        return self.manifests.get(name, version)

    def alias(self, name: str, alias: str | None = None) -> AliasDocument:
        """The alias document (the stage's default alias when ``alias`` is None).

        InvalidNameError for an invalid model or alias name (the alias cache
        checks the names before it reads S3, and holds only valid ones);
        ModelNotFoundError when the model does not exist at all.
        """
        try:
            return self.aliases.get(name, alias or self.default_alias)
        except AliasNotFoundError:
            if not self.registry.list_versions(name):
                raise ModelNotFoundError(name) from None
            raise

    def resolve(
        self,
        name: str,
        *,
        version: int | None = None,
        alias: str | None = None,
        routing_key: str | None = None,
    ) -> Target:
        """Who answers: ``version`` if given, else the alias's weighted choice (by
        ``routing_key`` when given, else at random), with its sampled shadow
        version (whose manifest is read after the answer, by the shadow run)."""
        if version is not None:
            validate_model_name(name)
            return Target(self.manifest(name, version), alias=None)
        document = self.alias(name, alias)
        chosen = choose_version(document.weights, routing_key, self._draw)
        primary = self.manifest(name, chosen)
        shadow = None
        if document.shadow and sampled(document.shadow.percent, self._draw):
            shadow = document.shadow.version
        return Target(primary, alias=document.alias, shadow=shadow)

    def describe(
        self, name: str, *, version: int | None = None, alias: str | None = None
    ) -> Manifest:
        """The manifest that speaks for a model: the version given, else the
        alias's heaviest version."""
        if version is not None:
            validate_model_name(name)
            return self.manifest(name, version)
        return self.manifest(name, primary_version(self.alias(name, alias)))

    # -- running ---------------------------------------------------------------

    def run(
        self,
        target: Target,
        inputs: Mapping[str, np.ndarray],
        *,
        outputs: Sequence[str] | None = None,
    ) -> Prediction:
        """Run the target version on ``inputs`` and return the requested
        ``outputs`` (all when None). Inputs are checked against the version's
        signature unless a decoder already did (CheckedInputs, built against the
        target's own signature). Who observes the run (metrics, shadow runs,
        capture) is the caller's business: a REST request or a batch file, not
        each call."""
        manifest = target.manifest
        if not isinstance(inputs, CheckedInputs):
            check_inputs(manifest.signature, inputs)
        names = [spec.name for spec in manifest.outputs]
        if outputs:
            for output in outputs:
                if manifest.signature.output(output) is None:
                    raise InvalidInputError(
                        "outputs",
                        f"unknown output {output!r}; the model has {', '.join(names)}",
                    )
            names = list(outputs)
        started = time.perf_counter()
        results = self._execute(manifest, names, inputs)
        latency_ms = (time.perf_counter() - started) * 1000.0
        return Prediction(target=target, outputs=results, latency_ms=latency_ms)

    def _execute(
        self, manifest: Manifest, names: list[str], inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        session = self.models.get(manifest).session
        try:
            values = session.run(names, dict(inputs))
        except Exception as error:  # onnxruntime raises its own unrelated types
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            if type(error).__name__ == "InvalidArgument":
                raise InvalidInputError("inputs", reason) from None
            raise ModelExecutionError(manifest.name, manifest.version, reason) from None
        return {
            name: np.asarray(value) for name, value in zip(names, values, strict=True)
        }


def row_count(inputs: Mapping[str, np.ndarray]) -> int:
    """The batch size of ``inputs`` (1 for a scalar input, 0 for none)."""
    for array in inputs.values():
        return int(array.shape[0]) if array.ndim else 1
    return 0


def agreement(
    primary_manifest: Manifest,
    primary: Mapping[str, np.ndarray],
    shadow_manifest: Manifest,
    shadow: Mapping[str, np.ndarray],
) -> float | None:
    """Share of rows where the shadow agrees with the primary: the same predicted
    class for classifiers, a value within 1% for single-output regressors."""
    ours = classifier_outputs(primary_manifest.signature)
    theirs = classifier_outputs(shadow_manifest.signature)
    if (
        ours is not None
        and theirs is not None
        and ours.probabilities.name in primary
        and theirs.probabilities.name in shadow
    ):
        left = np.argmax(primary[ours.probabilities.name], axis=1)
        right = np.argmax(shadow[theirs.probabilities.name], axis=1)
        return float(np.mean(left == right)) if left.size else None
    if len(primary) == 1 and len(shadow) == 1:
        left = np.asarray(next(iter(primary.values())), dtype=np.float64).ravel()
        right = np.asarray(next(iter(shadow.values())), dtype=np.float64).ravel()
        if left.shape != right.shape or not left.size:
            return None
        return float(np.mean(np.isclose(left, right, rtol=0.01)))
    return None
