"""The batch function in a process of its own, with its memory capped: run by
``test_batch_hostile`` as ``python -m tests.functional.hostile_batch_child PLAN``.

PLAN is JSON: ``{"warmup": KEY, "memory_mb": N, "seconds": S, "keys": [...]}``.
The S3 endpoint, buckets and settings come from the environment. The child
processes the warm-up file (the model is then loaded and cached), caps its
address space at what it has mapped plus the function's memory (onnxruntime and
numpy reserve address space they never touch: a cap of the function's size alone
would fail at import), then processes each key in turn with ``S`` seconds to live
and prints one JSON line per key: the manifest's status and error, the seconds
taken, and the peak resident memory above the resident memory before the job
(``VmHWM`` after resetting it through ``/proc/self/clear_refs``).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any

from chalicelib import wiring
from chalicelib.batch import job, keys
from chalicelib.batch.runtime import BatchRuntime

MIB = 1024 * 1024


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (VmSize, VmRSS, VmHWM)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


def run(key: str, seconds: float) -> dict[str, Any]:
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # VmHWM := VmRSS
    before = status_kib("VmRSS")
    started = time.monotonic()
    raised = None
    try:
        job.process_upload(
            wiring.settings().batch_bucket,
            key,
            BatchRuntime(
                s3=wiring.container().batch_s3,
                predictor=wiring.predictor(),
                settings=wiring.settings(),
                seconds_left=lambda: seconds - (time.monotonic() - started),
            ),
        )
    except BaseException as error:  # reported: the test says what it expected
        raised = type(error).__name__
    elapsed = time.monotonic() - started
    peak = status_kib("VmHWM") - before
    manifest_key = keys.record_key(key)
    response = wiring.container().batch_s3.get_object(
        Bucket=wiring.settings().batch_bucket, Key=manifest_key
    )
    manifest = json.loads(response["Body"].read())
    return {
        "key": key,
        "status": manifest["status"],
        "error": manifest.get("error"),
        "raised": raised,
        "seconds": elapsed,
        "peak_mib": peak / 1024,
    }


def main(plan: dict[str, Any]) -> None:
    run(plan["warmup"], 900.0)
    mapped = status_kib("VmSize") * 1024
    cap = mapped + plan["memory_mb"] * MIB
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    print(json.dumps({"mapped_mib": mapped / MIB}), flush=True)
    for key in plan["keys"]:
        print(json.dumps(run(key, plan["seconds"])), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
