"""The data plane behind the REST protocols: resolve who answers, decode the
request against that version's signature, run it, encode the answer.

Protocol-neutral in the way KServe's DataPlane is: it takes names, a parsed
request and the protocol's Codec (``chalicelib.protocols``), never an HTTP
request, and fills the request's Observation as it learns who answered, how many
rows and how long the model took.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from chalicelib.observe import Observation
from chalicelib.predictor import (
    Prediction,
    Predictor,
    Target,
    primary_version,
    row_count,
)
from chalicelib.protocols.common import Codec
from chalicelib.registry.manifest import Manifest, classifier_outputs

PLATFORM = "onnxruntime_onnx"


@dataclass(slots=True)
class Answer:
    """A prediction's JSON body and the version (and alias) that gave it."""

    body: dict[str, Any]
    manifest: Manifest
    alias: str | None


class DataPlane:
    """Metadata, readiness and predictions over one Predictor."""

    def __init__(self, predictor: Predictor, *, max_rows: int) -> None:
        self.predictor = predictor
        self.max_rows = max_rows
        self._labels: dict[tuple[str, int], str | None] = {}

    @property
    def default_alias(self) -> str:
        return self.predictor.default_alias

    def metadata(
        self, name: str, *, version: int | None, alias: str | None
    ) -> tuple[dict[str, Any], Manifest, str | None]:
        """The V2 model metadata of the version named, else of the alias's
        heaviest version, with every version of the model; and who speaks."""
        predictor = self.predictor
        manifest = predictor.describe(name, version=version, alias=alias)
        if version is None:
            alias = alias or predictor.default_alias
        body = {
            "name": manifest.name,
            "versions": [str(v) for v in predictor.registry.list_versions(name)],
            "platform": PLATFORM,
            "inputs": [spec.to_dict() for spec in manifest.inputs],
            "outputs": [spec.to_dict() for spec in manifest.outputs],
        }
        return body, manifest, alias

    def ready(
        self, name: str, *, version: int | None, alias: str | None
    ) -> tuple[Manifest, str | None]:
        """Load the version named, else every version the alias gives weight to
        (each must pass its integrity check); who speaks for the model."""
        predictor = self.predictor
        if version is not None:
            manifest = predictor.manifest(name, version)
            predictor.models.get(manifest)
            return manifest, None
        document = predictor.alias(name, alias)
        for weighted, weight in sorted(document.weights.items()):
            if weight > 0:
                predictor.models.get(predictor.manifest(name, weighted))
        return predictor.manifest(name, primary_version(document)), document.alias

    def infer[Request](
        self,
        name: str,
        request: Request,
        *,
        codec: Codec[Request],
        version: int | None,
        alias: str | None,
        routing_key: str | None,
        observation: Observation,
    ) -> Answer:
        """A request of either protocol through the version that answers: resolve
        it, decode the request against its signature, run it, encode the answer,
        each through the protocol's ``codec``."""
        target = self._resolve(name, version, alias, routing_key, observation)
        inputs = codec.decode(request, target.manifest, max_rows=self.max_rows)
        prediction = self._run(target, inputs, codec.outputs(request), observation)
        body = codec.encode(request, prediction.outputs, target.manifest, target.alias)
        return Answer(body, target.manifest, target.alias)

    def _run(
        self,
        target: Target,
        inputs: dict[str, np.ndarray],
        outputs: Sequence[str] | None,
        observation: Observation,
    ) -> Prediction:
        observation.rows = row_count(inputs)
        observation.inputs = inputs
        prediction = self.predictor.run(target, inputs, outputs=outputs)
        self._observe_run(observation, target, prediction)
        return prediction

    def _resolve(
        self,
        name: str,
        version: int | None,
        alias: str | None,
        routing_key: str | None,
        observation: Observation,
    ) -> Target:
        observation.routing_key = routing_key
        target = self.predictor.resolve(
            name, version=version, alias=alias, routing_key=routing_key
        )
        observation.version = target.version
        observation.alias = target.alias
        observation.shadow_version = target.shadow
        return target

    def _observe_run(
        self, observation: Observation, target: Target, prediction: Prediction
    ) -> None:
        observation.model_ms = prediction.latency_ms
        observation.outputs = outputs = prediction.outputs
        label = self._label_output(target.manifest)
        if label is not None:
            observation.labels = outputs.get(label)

    def _label_output(self, manifest: Manifest) -> str | None:
        """The name of a classifier's label output, None for other models; looked
        up once per version."""
        key = (manifest.name, manifest.version)
        if key not in self._labels:
            found = classifier_outputs(manifest.signature)
            self._labels[key] = found.label.name if found and found.label else None
        return self._labels[key]
