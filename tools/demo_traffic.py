"""``make demo-traffic``: a few thousand iris requests with labels through the
local stack (``make dev`` running), then the report, version 2 ahead.

It routes iris@prod 1=50 2=50 and captures it at 100 %, sends ``--requests``
V2 requests of one row each over HTTP, then labels every answered request
through ``POST /models/iris/feedback`` with the id Turnout answered with.
Version 2 is better on purpose: a label is what iris version 2 answers for the
row (run here with onnxruntime), replaced by another class for 5 % of the rows,
so version 2 is right about 95 % of the time and version 1 only where it agrees
with version 2. The rows are iris-like with noise, so the two disagree often
enough to tell apart. Once the captures are in S3 (written within
``TURNOUT_CAPTURE_FLUSH_SECONDS``), it prints ``turnout report iris``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import numpy as np

from chalicelib.clock import utc_now
from tools.devstack.stage import ROOT

CENTRES = np.array([[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.6, 2.0]])
NOISE = 0.05
FEEDBACK_BATCH = 100


def dev_environment() -> dict[str, str]:
    """The stack's variables: the environment's, else ``.dev.env``'s."""
    variables = {}
    path = ROOT / ".dev.env"
    if path.exists():
        for line in path.read_text().splitlines():
            if line.startswith("export "):
                name, _, value = line[len("export ") :].partition("=")
                variables[name] = shlex.split(value)[0] if value else ""
    variables.update(
        {name: value for name, value in os.environ.items() if name in variables}
    )
    missing = [
        name
        for name in (
            "TURNOUT_API_URL",
            "TURNOUT_MODEL_BUCKET",
            "TURNOUT_CAPTURE_BUCKET",
        )
        if not variables.get(name)
    ]
    if missing:
        raise SystemExit(
            f"demo-traffic: {', '.join(missing)} unknown: start `make dev` first "
            "(it writes .dev.env)"
        )
    return variables


def post(url: str, body: Any) -> tuple[dict[str, Any], dict[str, str]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read()), dict(response.headers)


def oracle_labels(rows: np.ndarray, source: np.random.Generator) -> list[int]:
    """Version 2's answers for ``rows``, with NOISE of them changed."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(ROOT / "models" / "iris-v2.onnx"))
    labels = session.run(["label"], {"float_input": rows.astype(np.float32)})[0]
    flipped = source.random(len(rows)) < NOISE
    shifted = (labels + source.integers(1, 3, len(rows))) % 3
    return [int(label) for label in np.where(flipped, shifted, labels)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--wait", type=float, default=180.0, help="for captures, s")
    arguments = parser.parse_args(argv)
    variables = dev_environment()
    os.environ.update(variables)
    api = variables["TURNOUT_API_URL"]

    from chalicelib.aliases.document import Capture
    from chalicelib.aliases.store import AliasStore
    from chalicelib.registry.versions import Registry
    from tools.devstack.clients import s3_client

    s3 = s3_client(variables["AWS_ENDPOINT_URL"])
    aliases = AliasStore(Registry(s3, variables["TURNOUT_MODEL_BUCKET"]))
    aliases.set_routing("iris", "prod", {1: 50, 2: 50}, actor="demo-traffic")
    aliases.set_capture("iris", "prod", Capture(100), actor="demo-traffic")
    started = utc_now()

    source = np.random.default_rng(14)
    classes = source.integers(0, 3, arguments.requests)
    spread = source.normal(0, 0.6, (arguments.requests, 4))
    rows = (CENTRES[classes] + spread).clip(0.1).round(2)
    labels = oracle_labels(rows, source)

    def predict(index: int) -> tuple[str, str]:
        tensor = {"name": "float_input", "shape": [1, 4], "datatype": "FP32"}
        _, headers = post(
            f"{api}/v2/models/iris/infer",
            {"inputs": [{**tensor, "data": rows[index].tolist()}]},
        )
        return headers["X-Request-Id"], headers.get("X-Model-Version", "?")

    print(f"demo-traffic: {arguments.requests} requests to iris@prod (1=50 2=50)")
    with ThreadPoolExecutor(4) as pool:
        answered = list(pool.map(predict, range(arguments.requests)))
    feedback = [
        {"id": request_id, "label": label}
        for (request_id, _), label in zip(answered, labels, strict=True)
    ]
    for start in range(0, len(feedback), FEEDBACK_BATCH):
        post(
            f"{api}/models/iris/feedback",
            {"feedback": feedback[start : start + FEEDBACK_BATCH]},
        )
    versions = {v: sum(1 for _, w in answered if w == v) for v in ("1", "2")}
    print(f"demo-traffic: answered by version 1: {versions['1']}, 2: {versions['2']};")
    print(f"demo-traffic: {len(feedback)} labels sent; waiting for the captures")

    from turnout.report.compute import compute_report
    from turnout.report.render_text import render_text

    deadline = time.monotonic() + arguments.wait
    while True:
        until = utc_now() + timedelta(seconds=1)
        found = compute_report(
            s3,
            model_bucket=variables["TURNOUT_MODEL_BUCKET"],
            capture_bucket=variables["TURNOUT_CAPTURE_BUCKET"],
            model="iris",
            alias="prod",
            since=started - timedelta(seconds=1),
            until=until,
        )
        labelled = sum(entry["labelled"] for entry in found["versions"])
        if labelled >= len(feedback) or time.monotonic() > deadline:
            break
        time.sleep(5)
    print()
    print(render_text(found))
    print()
    print("The same from a shell: source .dev.env && turnout report iris --since 1h")
    ahead = [c for c in found["comparisons"] if c.get("outcome") == "ahead"]
    return 0 if ahead else 1


if __name__ == "__main__":
    sys.exit(main())
