"""Build the demo models from scikit-learn's bundled data sets (no downloads).

    .venv/bin/python -m models.build

Writes, next to this file:
- ``iris-v1.onnx``: logistic regression classifier (label + probabilities)
- ``iris-v2.onnx``: gradient boosting classifier (label + probabilities)
- ``diabetes.onnx``: gradient boosting regressor (one ``variable`` output)

Each goes through ``turnout.publish`` as a dry run: converted, and checked
against scikit-learn's own predictions through onnxruntime (the parity check;
a model that fails it is not written). The class names ride in the model's
metadata (``turnout.labels``), which the registry reads when ``--labels`` is not
given.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from turnout.publish.api import publish

HERE = Path(__file__).resolve().parent


def write(filename: str, estimator: Any, sample: np.ndarray, **options: Any) -> None:
    result = publish(estimator, name="demo", sample=sample, dry_run=True, **options)
    (HERE / filename).write_bytes(result.onnx)
    print(f"wrote models/{filename} ({len(result.onnx)} bytes)")
    print(result.parity)


def build() -> None:
    iris = load_iris()
    x_iris = iris.data.astype(np.float32)
    names = [str(name) for name in iris.target_names]
    candidates = {
        "iris-v1.onnx": make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=500)
        ),
        "iris-v2.onnx": GradientBoostingClassifier(n_estimators=30, random_state=0),
    }
    for filename, estimator in candidates.items():
        estimator.fit(x_iris, iris.target)
        write(filename, estimator, x_iris, class_names=names)

    diabetes = load_diabetes()
    x_diabetes = diabetes.data.astype(np.float32)
    regressor = GradientBoostingRegressor(n_estimators=50, random_state=0)
    regressor.fit(x_diabetes, diabetes.target)
    write("diabetes.onnx", regressor, x_diabetes)


if __name__ == "__main__":
    build()
    sys.exit(0)
