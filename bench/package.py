"""The deployment package: its size, and a cold start from it.

    make bench-package        (.venv/bin/python -m bench.package)

Builds the dev stage's package (``tools.package``), unzips it read-only as
Lambda does (``/var/task`` and ``/opt``: nothing can write ``__pycache__``), and
measures:

- Size: app plus layer unzipped, against what must ship (onnxruntime, numpy,
  boto3 and botocore, as they stand in the layer). Target: within 1.05x.
- Cold start: a bare Python 3.12 that sees only the package
  (``tools.package.lambda_python``) runs ``bench/coldstart.py``, Turnout's
  handler answering one V2 request through an alias, against the floor from the
  same layer (import boto3 and onnxruntime, create the client, one
  ``get_object``, one ``InferenceSession``, one run); the model in a moto
  server's S3, the function's memory (AWS_LAMBDA_FUNCTION_MEMORY_SIZE) the
  stage's. Median of several runs taking turns. Target: at most 0.85x the floor.
  A third variant preloads the alias during init (``TURNOUT_PRELOAD``): its
  whole cold start, its init and its first request after the init are
  reported against the same floor.

Prints both and writes them to ``bench/results/package.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from bench.rest import ALIAS, Result, cold_start, table, turnout_event
from chalicelib.registry.versions import Registry
from tools.devstack.clients import aws_environment, s3_client
from tools.devstack.processes import start_moto
from tools.devstack.seed import create_buckets, seed_registry
from tools.devstack.stage import ROOT, stage_environment, stage_settings
from tools.package import SITE_PACKAGES, build_package, lambda_python, unpack

RESULTS = ROOT / "bench" / "results" / "package.json"
COLD_TARGET = 0.85
# Top-level names in site-packages of what must ship.
MUST_SHIP = ("onnxruntime", "numpy", "boto3", "botocore")


def unzipped_sizes(out: Path) -> tuple[int, int]:
    """(app plus layer, the must-ship part of the layer), bytes unzipped."""
    total = must_ship = 0
    for archive in ("deployment.zip", "layer-deployment.zip"):
        with zipfile.ZipFile(out / archive) as package:
            for entry in package.infolist():
                total += entry.file_size
                top = entry.filename.removeprefix(SITE_PACKAGES).split("/")[0]
                if top.split("-")[0].split(".")[0] in MUST_SHIP:
                    must_ship += entry.file_size
    return total, must_ship


def function_memory_mb(stage: str = "dev", function: str = "api_handler") -> str:
    """The memory of the stage's ``function`` in ``.chalice/config.json``, in MB."""
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    stage_config = config["stages"][stage]
    own = stage_config.get("lambda_functions", {}).get(function, {})
    for level in (own, stage_config, config):
        if "lambda_memory_size" in level:
            return str(level["lambda_memory_size"])
    return "128"  # Lambda's default


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.package", description=__doc__
    )
    parser.add_argument("--cold-runs", type=int, default=11)
    arguments = parser.parse_args(argv)
    from app import app

    with tempfile.TemporaryDirectory(prefix="turnout-package-") as scratch:
        out = build_package("dev", Path(scratch) / "out")
        sizes = unzipped_sizes(out)
        zipped = {name.name: name.stat().st_size for name in out.glob("*.zip")}
        command, python_environment = lambda_python(*unpack(out, Path(scratch)))
        settings = stage_settings()
        server = start_moto(log=Path(scratch) / "moto.log")
        try:
            s3 = s3_client(server.url)
            create_buckets(s3, settings.model_bucket, settings.batch_bucket)
            aliases = seed_registry(Registry(s3, settings.model_bucket), actor="bench")
            aliases.set_routing("iris", ALIAS, {1: 100}, actor="bench")
            environment = (
                aws_environment(server.url) | stage_environment() | python_environment
            )
            environment["BENCH_MODEL_KEY"] = "models/iris/versions/1/model.onnx"
            environment["BENCH_EVENT"] = json.dumps(turnout_event(app, 1))
            environment["BENCH_PRELOAD"] = f"iris@{ALIAS}"
            environment["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] = function_memory_mb()
            script = [*command, str(ROOT / "bench" / "coldstart.py")]
            runs: dict[str, list[dict[str, float]]] = {
                "floor": [],
                "turnout": [],
                "preload": [],
            }
            for round_number in range(arguments.cold_runs + 1):
                for mode in runs:
                    result = cold_start(mode, environment, command=script)
                    if round_number:  # the first loads the page cache
                        runs[mode].append(result)
        finally:
            server.stop()

    def median(mode: str, measure: str) -> float:
        return statistics.median(run[measure] for run in runs[mode])

    def first_request(mode: str) -> float:
        return statistics.median(
            run["seconds"] - run["init_seconds"] for run in runs[mode]
        )

    floor = median("floor", "seconds") * 1000.0
    count = arguments.cold_runs
    results = [
        Result(
            f"cold start, median of {count}",
            floor,
            median("turnout", "seconds") * 1000.0,
            "ms",
            COLD_TARGET,
        ),
        Result(
            f"cold start, fastest of {count}",
            min(run["seconds"] for run in runs["floor"]) * 1000.0,
            min(run["seconds"] for run in runs["turnout"]) * 1000.0,
            "ms",
            None,
        ),
        Result(
            "  init (import app), median",
            floor,
            median("turnout", "init_seconds") * 1000.0,
            "ms",
            None,
        ),
        Result(
            "  first request, median",
            floor,
            first_request("turnout") * 1000.0,
            "ms",
            None,
        ),
        Result(
            "preload: cold start, median",
            floor,
            median("preload", "seconds") * 1000.0,
            "ms",
            None,
        ),
        Result(
            "  init (preloads iris), median",
            floor,
            median("preload", "init_seconds") * 1000.0,
            "ms",
            None,
        ),
        Result(
            "  first request, median",
            floor,
            first_request("preload") * 1000.0,
            "ms",
            None,
        ),
        Result(
            "peak memory (VmHWM), median",
            median("floor", "peak_mb"),
            median("turnout", "peak_mb"),
            "MB",
            None,
        ),
    ]
    total, must_ship = sizes
    print(table(results))
    print(
        f"(load average {', '.join(f'{load:.2f}' for load in os.getloadavg())};"
        " floor: the whole cold start of the floor on every row but memory)"
    )
    print(
        f"\nunzipped: app + layer {total / 1e6:.1f} MB, must ship "
        f"{must_ship / 1e6:.1f} MB: {total / must_ship:.3f}x (target <= 1.05x)"
    )
    print("zipped: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in zipped.items()))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "cold": [asdict(r) | {"ratio": r.ratio} for r in results],
                "unzipped_bytes": total,
                "must_ship_bytes": must_ship,
                "zipped_bytes": zipped,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
