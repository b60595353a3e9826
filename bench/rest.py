"""REST benchmark: Turnout's whole Lambda handler against the floor a user would
write without it (``bench.floor_app``), both measured in the same run.

    make bench-rest        (.venv/bin/python -m bench.rest)

- Warm latency, p50 and p99: an API Gateway proxy event into the Chalice app
  object to its response, iris version 1 (the floor's model) through an alias,
  for a 1-row V2 request, a 1-row instances request and a 1,000-row V2 request;
  in one process, S3 is moto's in-process mock. The apps take turns in blocks,
  so that a noisy neighbour hurts all alike. Turnout writes its metrics line per
  request to stdout, as on Lambda, where stdout is a pipe: here a pipe too,
  read by another process (``--logs devnull``: /dev/null). Turnout runs with data
  capture at 100 % (alias ``bench-capture``) and off (alias ``bench``); the work
  after each answer (capture writes) runs between calls, untimed, as the Lambda
  extension runs it once the response is posted. Targets at p50, capture at
  100 %: 1 row within 2x the floor, 1,000 rows within 1.2x; capture at 100 %
  within 1.1x of capture off.
- Cold start: a fresh process from its first import to the first answer, the
  model fetched from a moto server's S3 (``bench.coldstart``); the median of
  several runs, taking turns. Target: within 1.25x the floor.

Prints a table and writes it to ``bench/results/rest.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tools.devstack.clients import aws_environment, s3_client
from tools.devstack.processes import start_moto
from tools.devstack.seed import create_buckets, seed_registry
from tools.devstack.stage import ROOT, stage_environment, stage_settings

RESULTS = ROOT / "bench" / "results" / "rest.json"
ALIAS = "bench"
CAPTURED_ALIAS = "bench-capture"
V2_PATH = "/v2/models/iris/infer"
INSTANCES_PATH = "/models/iris/predict"
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


def instances_request(rows: int) -> str:
    """An instances request body: ``rows`` iris rows."""
    return json.dumps({"instances": np.resize(IRIS_ROWS, (rows, 4)).tolist()})


# (path, request body) of each route measured.
ROUTES: dict[str, tuple[str, Callable[[int], str]]] = {
    "V2": (V2_PATH, v2_request),
    "instances": (INSTANCES_PATH, instances_request),
}


def turnout_event(
    app: Any, rows: int, route: str = "V2", alias: str = ALIAS
) -> dict[str, Any]:
    path, body = ROUTES[route]
    headers = {"Content-Type": "application/json", "X-Turnout-Alias": alias}
    return proxy_event(app, "POST", path, headers, body(rows))


def floor_event(floor: Any, rows: int, route: str) -> dict[str, Any]:
    path, body = ROUTES[route]
    return proxy_event(
        floor, "POST", path, {"Content-Type": "application/json"}, body(rows)
    )


def outputs_of(response: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The probabilities and labels of a V2 or an instances answer."""
    if response["statusCode"] != 200:
        raise RuntimeError(f"answered {response['statusCode']}: {response['body']}")
    body = json.loads(response["body"])
    if "outputs" in body:
        return {o["name"]: o["data"] for o in body["outputs"]}
    # Turnout names the classes (probabilities keyed by name), the floor does not.
    rows = [row["probabilities"] for row in body["predictions"]]
    return {
        "probabilities": [
            p for row in rows for p in (row.values() if isinstance(row, dict) else row)
        ]
    }


@contextlib.contextmanager
def stdout_to(sink: str) -> Iterator[None]:
    """Point sys.stdout (where the metrics lines go) at a pipe that another
    process reads, as Lambda's runtime reads the function's stdout, or at
    /dev/null."""
    previous = sys.stdout
    with contextlib.ExitStack() as stack:
        if sink == "devnull":
            sys.stdout = stack.enter_context(open(os.devnull, "w"))
        else:
            reader = subprocess.Popen(
                ["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
            )
            stack.callback(reader.wait, 10)
            assert reader.stdin is not None
            sys.stdout = stack.enter_context(
                io.TextIOWrapper(reader.stdin, line_buffering=True)
            )
        try:
            yield
        finally:
            sys.stdout = previous


def check_metrics_written(
    call: Callable[[], object], after: Callable[[], object]
) -> None:
    """Turnout's metrics line must be written, else it is not measured."""
    previous, sys.stdout = sys.stdout, io.StringIO()
    try:
        call()
        after()
        written = sys.stdout.getvalue()
    finally:
        sys.stdout = previous
    if '"event":"prediction"' not in written:
        raise RuntimeError(f"no metrics line was written: {written!r}")


def check_same_answer(turnout: Mapping[str, Any], floor: Mapping[str, Any]) -> None:
    """Both apps must compute the same thing, else the comparison means nothing."""
    ours, theirs = outputs_of(turnout), outputs_of(floor)
    if ours.get("label") != theirs.get("label") or not np.allclose(
        ours["probabilities"], theirs["probabilities"], atol=1e-6
    ):
        raise RuntimeError("Turnout and the floor disagree on the predictions")


def check_captured(s3: Any, bucket: str) -> None:
    """Capture at 100 % must have written, else it is not measured."""
    if not s3.list_objects_v2(Bucket=bucket).get("Contents"):
        raise RuntimeError("capture at 100 % wrote nothing")


# -- warm ------------------------------------------------------------------------


Contestant = tuple[Callable[[], object], Callable[[], object] | None]


def time_calls(
    call: Callable[[], object], count: int, after: Callable[[], object] | None = None
) -> list[float]:
    """Each call's latency; ``after`` runs between calls, untimed (the work a
    Lambda extension does once the response is posted)."""
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        timings.append(time.perf_counter() - started)
        if after is not None:
            after()
    return timings


def interleaved(
    contestants: Mapping[str, Contestant], *, rounds: int, block: int
) -> dict[str, list[float]]:
    """Latencies of each, measured in alternating blocks after a warm-up."""
    timings: dict[str, list[float]] = {name: [] for name in contestants}
    for call, after in contestants.values():
        time_calls(call, block, after)
    for _ in range(rounds):
        for name, (call, after) in contestants.items():
            timings[name] += time_calls(call, block, after)
    return timings


def percentile_ms(timings: Sequence[float], percent: float) -> float:
    return float(np.percentile(timings, percent)) * 1000.0


# (route, rows, rounds, block, target ratio to the floor at p50)
WARM_CASES = (
    ("V2", 1, 40, 100, 2.0),
    ("instances", 1, 40, 100, 2.0),
    ("V2", 1000, 20, 20, 1.2),
)
# Capture at 100 % against capture off, p50.
CAPTURE_TARGET = 1.10


def warm(scale: float, sink: str) -> list[Result]:
    """Warm p50/p99 for each case, Turnout (metrics to ``sink``, capture at 100 %
    and off) and the floor in one process."""
    from moto import mock_aws

    settings = stage_settings()
    cache = tempfile.TemporaryDirectory(prefix="turnout-bench-")
    environment = aws_environment(None) | stage_environment()
    # The app reads its settings from the environment, as on Lambda.
    os.environ.clear()
    os.environ.update(environment | {"TURNOUT_MODEL_CACHE_DIR": cache.name})
    with cache, mock_aws():
        import boto3

        from chalicelib import wiring
        from chalicelib.aliases.document import Capture
        from chalicelib.background import BackgroundWork
        from chalicelib.registry.versions import Registry

        s3 = boto3.client("s3")
        create_buckets(
            s3, settings.model_bucket, settings.batch_bucket, settings.capture_bucket
        )
        aliases = seed_registry(Registry(s3, settings.model_bucket), actor="bench")
        aliases.set_routing("iris", ALIAS, {1: 100}, actor="bench")
        aliases.set_routing("iris", CAPTURED_ALIAS, {1: 100}, actor="bench")
        aliases.set_capture("iris", CAPTURED_ALIAS, Capture(100), actor="bench")
        # As on Lambda: the work after each answer waits for the extension,
        # which runs it once the response is posted (here: between calls).
        work = BackgroundWork(deferred=True)
        wiring.install(wiring.Container(work=work))

        from chalice.local import LambdaContext

        from app import app
        from bench.floor_app import floor

        results = []
        for route, rows, rounds, block, target in WARM_CASES:
            context = LambdaContext("bench", memory_size=2048)
            floor_call = functools.partial(
                floor, floor_event(floor, rows, route), context
            )
            plain = functools.partial(
                app, turnout_event(app, rows, route, ALIAS), context
            )
            captured = functools.partial(
                app, turnout_event(app, rows, route, CAPTURED_ALIAS), context
            )
            with stdout_to("devnull"):
                check_same_answer(plain(), floor_call())
            check_metrics_written(plain, work.run_pending)
            with stdout_to(sink):
                timings = interleaved(
                    {
                        "floor": (floor_call, None),
                        "off": (plain, work.run_pending),
                        "captured": (captured, work.run_pending),
                    },
                    rounds=max(1, int(rounds * scale)),
                    block=block,
                )
            check_captured(s3, settings.capture_bucket)
            size = f"{route} {rows:,} row" + "s" * (rows > 1)
            floor_times, off, on = timings["floor"], timings["off"], timings["captured"]
            results += [
                Result(
                    f"warm p50, {size}",
                    percentile_ms(floor_times, 50),
                    percentile_ms(on, 50),
                    "ms",
                    target,
                ),
                Result(
                    f"warm p99, {size}",
                    percentile_ms(floor_times, 99),
                    percentile_ms(on, 99),
                    "ms",
                    None,
                ),
                Result(
                    f"capture on/off p50, {size}",
                    percentile_ms(off, 50),
                    percentile_ms(on, 50),
                    "ms",
                    CAPTURE_TARGET,
                ),
            ]
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
        from chalicelib.registry.versions import Registry

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
        f"{'measure':<38}{'floor':>11}{'Turnout':>11}{'ratio':>8}  {'target':<9}",
        "-" * 80,
    ]
    for result in results:
        target = f"<= {result.target}x" if result.target else "(report)"
        lines.append(
            f"{result.measure:<38}{result.floor:>8.3f} {result.unit:<2}"
            f"{result.turnout:>8.3f} {result.unit:<2}"
            f"{result.ratio:>7.2f}x  {target:<9} {result.verdict}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rest", description=__doc__)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply the warm rounds"
    )
    parser.add_argument("--cold-runs", type=int, default=11)
    parser.add_argument(
        "--logs",
        choices=["pipe", "devnull"],
        default="pipe",
        help="where the metrics lines go: a pipe, as Lambda's stdout (default)",
    )
    arguments = parser.parse_args(argv)
    results = warm(arguments.scale, arguments.logs) + cold(arguments.cold_runs)
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
