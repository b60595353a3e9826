"""One cold start, timed from the first import to the first answer.

Run by ``bench.rest`` in a fresh process per measurement, never imported by it::

    python -m bench.coldstart floor      # boto3 + onnxruntime by hand
    python -m bench.coldstart turnout    # Turnout's Lambda handler module
    python -m bench.coldstart preload    # the same, TURNOUT_PRELOAD=$BENCH_PRELOAD

The environment carries the moto endpoint (``AWS_ENDPOINT_URL``), the stage's
``TURNOUT_...`` variables, ``BENCH_MODEL_KEY`` (floor), ``BENCH_EVENT``
(Turnout: an API Gateway proxy event) and ``BENCH_PRELOAD`` (preload). Prints
one JSON line: the seconds, the seconds of the init (importing the handler
module; Turnout only, else the whole), the status code, the answer's body and
the peak resident memory (``VmHWM``, in MB: ``ru_maxrss`` of a child would
carry its parent's peak).

``bench.package`` runs this file by path in a bare interpreter on the unzipped
deployment package: it imports nothing but the standard library at the top.
"""

import time

STARTED = time.perf_counter()
INIT_DONE: float | None = None

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402


def floor() -> tuple[int, str]:
    """What anyone would write: fetch the model, open a session, run one row."""
    import boto3
    import numpy as np
    import onnxruntime

    client = boto3.client("s3")
    body = client.get_object(
        Bucket=os.environ["TURNOUT_MODEL_BUCKET"], Key=os.environ["BENCH_MODEL_KEY"]
    )["Body"].read()
    session = onnxruntime.InferenceSession(body, providers=["CPUExecutionProvider"])
    row = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
    label, _ = session.run(None, {"float_input": row})
    return 200, json.dumps({"label": label.tolist()})


def turnout() -> tuple[int, str]:
    """Import the handler module, as Lambda's init does, and answer one event."""
    from types import SimpleNamespace

    from app import app

    global INIT_DONE
    INIT_DONE = time.perf_counter()
    context = SimpleNamespace(
        aws_request_id="cold-start",
        function_name="turnout-dev",
        memory_limit_in_mb=2048,
        get_remaining_time_in_millis=lambda: 30_000,
    )
    response = app(json.loads(os.environ["BENCH_EVENT"]), context)
    return int(response["statusCode"]), str(response["body"])


def preload() -> tuple[int, str]:
    """``turnout`` on a function that preloads ``BENCH_PRELOAD`` during init."""
    os.environ["TURNOUT_PRELOAD"] = os.environ["BENCH_PRELOAD"]
    return turnout()


def peak_mb() -> float:
    """This process's peak resident set, from /proc/self/status (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


if __name__ == "__main__":
    modes = {"floor": floor, "turnout": turnout, "preload": preload}
    status, body = modes[sys.argv[1]]()
    answered = time.perf_counter()
    init = (INIT_DONE or answered) - STARTED
    print(
        json.dumps(
            {
                "seconds": answered - STARTED,
                "init_seconds": init,
                "status": status,
                "body": body,
                "peak_mb": peak_mb(),
            }
        )
    )
