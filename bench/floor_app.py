"""The floor of the REST benchmark: what a user would write without Turnout.

Two Chalice routes (V2 and instances) that decode the same JSON, run a bare
onnxruntime ``InferenceSession`` and encode the outputs, nothing else: no
registry, no alias, no validation beyond what numpy and onnxruntime do
themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
from chalice.app import Chalice

MODEL = Path(__file__).resolve().parent.parent / "models" / "iris-v1.onnx"

floor = Chalice(app_name="floor")
session = onnxruntime.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])


@floor.route("/v2/models/{name}/infer", methods=["POST"])
def infer(name: str) -> dict[str, Any]:
    assert floor.current_request is not None
    request = floor.current_request.json_body
    feeds = {
        tensor["name"]: np.asarray(tensor["data"], dtype=np.float32).reshape(
            tensor["shape"]
        )
        for tensor in request["inputs"]
    }
    names = [output.name for output in session.get_outputs()]
    results = session.run(names, feeds)
    return {
        "model_name": name,
        "outputs": [
            {
                "name": output,
                "shape": list(value.shape),
                "datatype": "FP32" if value.dtype == np.float32 else "INT64",
                "data": value.ravel().tolist(),
            }
            for output, value in zip(names, results, strict=True)
        ],
    }


@floor.route("/models/{name}/predict", methods=["POST"])
def predict(name: str) -> dict[str, Any]:
    assert floor.current_request is not None
    rows = np.asarray(floor.current_request.json_body["instances"], dtype=np.float32)
    labels, probabilities = session.run(None, {"float_input": rows})
    return {
        "predictions": [
            {"label": label, "probabilities": row}
            for label, row in zip(labels.tolist(), probabilities.tolist(), strict=True)
        ]
    }
