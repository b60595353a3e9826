"""Run by test_large_models in a fresh process: load one model, print how much
its peak memory grew, as a multiple of the model's size.

    python -m tests.functional.large_model_child file|bytes MODEL MANIFEST CACHE

``file``: Turnout's way (ModelCache: streamed to CACHE, opened from the file);
``bytes``: the model's bytes read whole and given to onnxruntime. onnxruntime is
warmed up on a tiny model first, so that only the model's own cost is measured.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import BinaryIO

import numpy as np

from chalicelib.model_files import ArtifactFiles
from chalicelib.registry.manifest import Manifest
from chalicelib.sessions import ModelCache, open_session
from tests.functional.onnx_support import identity_model


def peak_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(how: str, model: str, manifest_file: str, cache: str) -> None:
    manifest = Manifest.from_dict(json.loads(Path(manifest_file).read_text()))
    open_session(identity_model("FP32", 4)).run(None, {"x": np.ones((1, 4), "f4")})
    before = peak_bytes()
    if how == "file":

        def fetch(_: Manifest) -> BinaryIO:
            return open(model, "rb")  # the cache reads and closes it

        models = ModelCache(fetch, ArtifactFiles(cache, 1 << 40), 1 << 40)
        session = models.get(manifest).session
    else:
        session = open_session(Path(model).read_bytes())
    width = manifest.inputs[0].shape[1]
    session.run(None, {"x": np.ones((1, width), "f4")})
    print(json.dumps({"ratio": (peak_bytes() - before) / manifest.size}))


if __name__ == "__main__":
    main(*sys.argv[1:])
