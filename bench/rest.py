"""REST benchmark: Turnout's whole Lambda handler against the floor a user would
write without it (``bench.floor_app``), both measured in the same run.

    make bench-rest        (.venv/bin/python -m bench.rest)

- Warm latency, p50 and p99: an API Gateway proxy event into the Chalice app
  object to its response, iris through the alias ``bench`` (version 1, the
  floor's model), for a 1-row and a 1,000-row V2 request; in one process, S3 is
  moto's in-process mock. The two apps take turns in blocks, so that a noisy
  neighbour hurts both alike. Turnout logs a line per prediction, as on Lambda
  (where it goes to stdout): here the app's handler writes it to /dev/null, so
  that building, formatting and writing it are measured. Target: Turnout within
  1.5x the floor at p50.
- Cold start: a fresh process from its first import to the first answer, the
  model fetched from a moto server's S3 (``bench.coldstart``); the median of
  several runs, taking turns. Target: within 1.25x the floor.

Prints a table and writes it to ``bench/results/rest.json``.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tools.devstack import (
    ROOT,
    aws_environment,
    create_buckets,
    s3_client,
    seed_registry,
    stage_environment,
    stage_settings,
    start_moto,
)

RESULTS = ROOT / "bench" / "results" / "rest.json"
ALIAS = "bench"
V2_PATH = "/v2/models/iris/infer"
IRIS_ROWS = np.array(
    [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]],
    dtype=np.float32,
)


@dataclass(frozen=True)
class Result:
    measure: str
    floor: float
    turnout: float
    unit: str
    target: float | None

    @property
    def ratio(self) -> float:
        return self.turnout / self.floor

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "-"
        return "ok" if self.ratio <= self.target else "MISSED"


# -- requests as API Gateway delivers them ---------------------------------------


def v2_request(rows: int) -> str:
    """A V2 infer request body: ``rows`` iris rows, flat row-major FP32 data."""
    data = np.resize(IRIS_ROWS, (rows, 4))
    tensor = {"name": "float_input", "shape": [rows, 4], "datatype": "FP32"}
    return json.dumps({"inputs": [{**tensor, "data": data.ravel().tolist()}]})


# What API Gateway (a regional REST API) adds to every request it proxies.
GATEWAY_HEADERS = {
    "Accept": "*/*",
    "Host": "abcdef1234.execute-api.us-east-1.amazonaws.com",
    "User-Agent": "python-requests/2.32.3",
    "X-Amzn-Trace-Id": "Root=1-65f0c0de-0123456789abcdef01234567",
    "X-Forwarded-For": "203.0.113.7",
    "X-Forwarded-Port": "443",
    "X-Forwarded-Proto": "https",
}


def proxy_event(
    app: Any, method: str, path: str, headers: Mapping[str, str], body: str
) -> dict[str, Any]:
    """An API Gateway REST (v1 payload) proxy event for ``app``'s route at
    ``path``, as Lambda receives it."""
    from chalice.local import RouteMatcher

    match = RouteMatcher(list(app.routes)).match_route(path)
    given = {**GATEWAY_HEADERS, **headers, "Content-Length": str(len(body))}
    lower = {name.lower(): value for name, value in given.items()}
    return {
        "resource": match.route,
        "path": path,
        "httpMethod": method,
        "headers": lower,
        "multiValueHeaders": {name: [value] for name, value in lower.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": match.captured,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": match.route,
            "httpMethod": method,
            "path": f"/api{path}",
            "stage": "api",
            "requestId": "bench",
            "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": body,
        "isBase64Encoded": False,
    }


def turnout_event(app: Any, rows: int) -> dict[str, Any]:
    headers = {"Content-Type": "application/json", "X-Turnout-Alias": ALIAS}
    return proxy_event(app, "POST", V2_PATH, headers, v2_request(rows))


def outputs_of(response: Mapping[str, Any]) -> dict[str, list[Any]]:
    if response["statusCode"] != 200:
        raise RuntimeError(f"answered {response['statusCode']}: {response['body']}")
    return {o["name"]: o["data"] for o in json.loads(response["body"])["outputs"]}


def log_to(app: Any, stream: io.TextIOBase) -> None:
    """Point the app's log handler (stdout, as on Lambda) at ``stream``."""
    for handler in app.log.handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(stream)


def check_prediction_logged(app: Any, call: Callable[[], object]) -> None:
    """Turnout's per-prediction log line must be written, else it is not measured."""
    written = io.StringIO()
    log_to(app, written)
    call()
    if '"event": "prediction"' not in written.getvalue():
        raise RuntimeError(f"no prediction log line was written: {written.getvalue()}")


def check_same_answer(turnout: Mapping[str, Any], floor: Mapping[str, Any]) -> None:
    """Both apps must compute the same thing, else the comparison means nothing."""
    ours, theirs = outputs_of(turnout), outputs_of(floor)
    if ours["label"] != theirs["label"] or not np.allclose(
        ours["probabilities"], theirs["probabilities"], atol=1e-6
    ):
        raise RuntimeError("Turnout and the floor disagree on the predictions")


# -- warm ------------------------------------------------------------------------


def time_calls(call: Callable[[], object], count: int) -> list[float]:
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        timings.append(time.perf_counter() - started)
    return timings


def interleaved(
    floor: Callable[[], object],
    turnout: Callable[[], object],
    *,
    rounds: int,
    block: int,
) -> tuple[list[float], list[float]]:
    """Latencies of both, measured in alternating blocks after a warm-up."""
    time_calls(floor, block)
    time_calls(turnout, block)
    floor_times: list[float] = []
    turnout_times: list[float] = []
    for _ in range(rounds):
        floor_times += time_calls(floor, block)
        turnout_times += time_calls(turnout, block)
    return floor_times, turnout_times


def percentile_ms(timings: Sequence[float], percent: float) -> float:
    return float(np.percentile(timings, percent)) * 1000.0


def warm(scale: float) -> list[Result]:
    """Warm p50/p99 for 1 and 1,000 rows, Turnout and the floor in one process."""
    from moto import mock_aws

    settings = stage_settings()
    cache = tempfile.TemporaryDirectory(prefix="turnout-bench-")
    environment = aws_environment(None) | stage_environment()
    # The app reads its settings from the environment, as on Lambda.
    os.environ.clear()
    os.environ.update(environment | {"TURNOUT_MODEL_CACHE_DIR": cache.name})
    with cache, mock_aws(), open(os.devnull, "w") as null:
        import boto3

        from chalicelib.registry import Registry

        s3 = boto3.client("s3")
        create_buckets(s3, settings.model_bucket, settings.batch_bucket)
        aliases = seed_registry(Registry(s3, settings.model_bucket), actor="bench")
        aliases.set_routing("iris", ALIAS, {1: 100}, actor="bench")

        from chalice.local import LambdaContext

        from app import app
        from bench.floor_app import floor

        results = []
        for rows, rounds, block in ((1, 40, 100), (1000, 20, 20)):
            turnout_call = turnout_event(app, rows)
            floor_call = proxy_event(
                floor,
                "POST",
                V2_PATH,
                {"Content-Type": "application/json"},
                v2_request(rows),
            )
            context = LambdaContext("bench", memory_size=2048)
            check_same_answer(app(turnout_call, context), floor(floor_call, context))
            check_prediction_logged(app, functools.partial(app, turnout_call, context))
            log_to(app, null)
            floor_times, turnout_times = interleaved(
                functools.partial(floor, floor_call, context),
                functools.partial(app, turnout_call, context),
                rounds=max(1, int(rounds * scale)),
                block=block,
            )
            size = f"{rows:,} row" + "s" * (rows > 1)
            for percent, target in ((50, 1.5), (99, None)):
                results.append(
                    Result(
                        f"warm p{percent}, {size}",
                        percentile_ms(floor_times, percent),
                        percentile_ms(turnout_times, percent),
                        "ms",
                        target,
                    )
                )
    return results


# -- cold ------------------------------------------------------------------------


def cold_start(
    mode: str,
    environment: Mapping[str, str],
    command: Sequence[str] = (sys.executable, "-m", "bench.coldstart"),
) -> dict[str, Any]:
    """One fresh ``bench.coldstart`` process (run by ``command``), with an empty
    model cache."""
    with tempfile.TemporaryDirectory(prefix="turnout-cold-") as cache_dir:
        completed = subprocess.run(
            [*command, mode],
            cwd=ROOT,
            env={**environment, "TURNOUT_MODEL_CACHE_DIR": cache_dir},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    if completed.returncode != 0:
        raise RuntimeError(f"{mode} cold start failed:\n{completed.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    if result["status"] != 200:
        raise RuntimeError(f"{mode} cold start answered {result['status']}: {result}")
    return result


def cold(runs: int) -> list[Result]:
    """Median cold start of each, against a moto server, runs taking turns."""
    from app import app

    settings = stage_settings()
    server = start_moto(log=Path(os.devnull))
    try:
        s3 = s3_client(server.url)
        create_buckets(s3, settings.model_bucket, settings.batch_bucket)
        from chalicelib.registry import Registry

        aliases = seed_registry(Registry(s3, settings.model_bucket), actor="bench")
        aliases.set_routing("iris", ALIAS, {1: 100}, actor="bench")
        environment = aws_environment(server.url) | stage_environment()
        environment["BENCH_MODEL_KEY"] = "models/iris/versions/1/model.onnx"
        environment["BENCH_EVENT"] = json.dumps(turnout_event(app, 1))
        # One run each first: loads the shared libraries into the page cache.
        cold_start("floor", environment)
        cold_start("turnout", environment)
        floor_times, turnout_times = [], []
        for _ in range(runs):
            floor_times.append(cold_start("floor", environment)["seconds"])
            turnout_times.append(cold_start("turnout", environment)["seconds"])
    finally:
        server.stop()
    return [
        Result(
            f"cold start, median of {runs}",
            statistics.median(floor_times) * 1000.0,
            statistics.median(turnout_times) * 1000.0,
            "ms",
            1.25,
        ),
        # The least disturbed run of each: what a cold start costs on a quiet host.
        Result(
            f"cold start, fastest of {runs}",
            min(floor_times) * 1000.0,
            min(turnout_times) * 1000.0,
            "ms",
            None,
        ),
    ]


# -- report ----------------------------------------------------------------------


def table(results: Sequence[Result]) -> str:
    lines = [
        f"{'measure':<28}{'floor':>12}{'Turnout':>12}{'ratio':>8}  {'target':<9}",
        "-" * 72,
    ]
    for result in results:
        target = f"<= {result.target}x" if result.target else "(report)"
        lines.append(
            f"{result.measure:<28}{result.floor:>9.3f} {result.unit:<2}"
            f"{result.turnout:>9.3f} {result.unit:<2}"
            f"{result.ratio:>7.2f}x  {target:<9} {result.verdict}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rest", description=__doc__)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply the warm rounds"
    )
    parser.add_argument("--cold-runs", type=int, default=11)
    arguments = parser.parse_args(argv)
    results = warm(arguments.scale) + cold(arguments.cold_runs)
    print(table(results))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            [asdict(result) | {"ratio": result.ratio} for result in results], indent=2
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
