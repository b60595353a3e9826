"""Build the demo models from scikit-learn's bundled data sets (no downloads).

    .venv/bin/python models/build.py

Writes, next to this file:
- ``iris-v1.onnx``: logistic regression classifier (label + probabilities)
- ``iris-v2.onnx``: gradient boosting classifier (label + probabilities)
- ``diabetes.onnx``: gradient boosting regressor (one ``variable`` output)

Each is checked against scikit-learn's own predictions through onnxruntime. The
class names ride in the model's metadata (``turnout.labels``), which the registry
reads when ``--labels`` is not given.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

HERE = Path(__file__).resolve().parent
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


def convert(estimator: Any, features: int, metadata: dict[str, str]) -> bytes:
    # zipmap=False: probabilities as a plain 2-D tensor, not a list of maps.
    options = {"zipmap": False} if hasattr(estimator, "predict_proba") else {}
    model = to_onnx(
        estimator,
        initial_types=[("float_input", FloatTensorType([None, features]))],
        options=options,
        target_opset=TARGET_OPSET,
    )
    model.producer_name = "skl2onnx"
    onnx.helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def check_classifier(data: bytes, estimator: Any, features: np.ndarray) -> None:
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(None, {"float_input": features})
    np.testing.assert_array_equal(labels, estimator.predict(features))
    np.testing.assert_allclose(
        probabilities, estimator.predict_proba(features), rtol=1e-4, atol=1e-5
    )


def check_regressor(data: bytes, estimator: Any, features: np.ndarray) -> None:
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    (predictions,) = session.run(None, {"float_input": features})
    np.testing.assert_allclose(
        predictions.ravel(), estimator.predict(features), rtol=1e-4, atol=1e-3
    )


def build() -> None:
    iris = load_iris()
    x_iris = iris.data.astype(np.float32)
    iris_labels = {"turnout.labels": ",".join(str(n) for n in iris.target_names)}
    candidates = {
        "iris-v1.onnx": make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=500)
        ),
        "iris-v2.onnx": GradientBoostingClassifier(n_estimators=30, random_state=0),
    }
    for filename, estimator in candidates.items():
        estimator.fit(x_iris, iris.target)
        data = convert(estimator, 4, iris_labels)
        check_classifier(data, estimator, x_iris)
        (HERE / filename).write_bytes(data)
        print(f"wrote models/{filename} ({len(data)} bytes)")

    diabetes = load_diabetes()
    x_diabetes = diabetes.data.astype(np.float32)
    regressor = GradientBoostingRegressor(n_estimators=50, random_state=0)
    regressor.fit(x_diabetes, diabetes.target)
    data = convert(regressor, x_diabetes.shape[1], {})
    check_regressor(data, regressor, x_diabetes)
    (HERE / "diabetes.onnx").write_bytes(data)
    print(f"wrote models/diabetes.onnx ({len(data)} bytes)")


if __name__ == "__main__":
    build()
    sys.exit(0)
