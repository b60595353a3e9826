"""Large models: the first request and peak memory of a 1 GiB model, and of a
2.5 GiB one stored as ONNX external data, on a moto server's S3.

    make bench-bigmodel    (.venv/bin/python -m bench.bigmodel [--size-mib 1024]
                            [--external-mib 2560] [--repeat 3] [--keep DIR])

The models are generated (``models/generated.py``): a chain of MatMul nodes over
2048 x 2048 float32 weights (16 MiB each), nothing but initializers, registered
with ``Registry.register_file``. Each measurement is a fresh process, from its
first import to its first answer, its peak memory read from ``VmHWM``:

- *floor*: what a user writes by hand: ``import boto3, onnxruntime``,
  ``get_object`` into bytes, ``InferenceSession(bytes)``, one ``run``. A model
  with external data cannot be loaded so (protobuf's 2 GB limit): no floor.
- *Turnout*: ``ModelCache.get`` as the functions build it (wired as in
  ``chalicelib.wiring``), an empty model file cache: the files streamed to disk,
  verified, opened from their path; then one ``run``.
  The REST function's own environment variables apply (``.chalice/config.json``:
  ``MALLOC_MMAP_THRESHOLD_``).
- *Turnout, from /tmp*: the same in a new process whose file cache already holds
  the model (a container restarted on the same /tmp would not; a model evicted
  from memory and opened again would).

moto keeps objects in temporary files: ``TMPDIR`` is the work folder, on disk.
Each case runs ``--repeat`` times: the table has the median time and the
highest peak. Prints a table and writes it to ``bench/results/bigmodel.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.generated import DIMENSION, matmul_chain

STARTED = time.perf_counter()

MIB = 1024 * 1024
BUCKET = "turnout-models-bench"
TARGET_RATIO = 1.5


# -- the models ----------------------------------------------------------------------


def model_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.parent.iterdir())


# -- the children --------------------------------------------------------------------


def peak_bytes() -> int:
    """This process's peak resident set (``VmHWM``; ru_maxrss of a child carries
    its parent's peak)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def one_row() -> Any:
    import numpy as np

    return np.ones((1, DIMENSION), dtype=np.float32)


def floor(name: str) -> float:
    import boto3
    import onnxruntime

    body = (
        boto3.client("s3")
        .get_object(Bucket=BUCKET, Key=f"models/{name}/versions/1/model.onnx")["Body"]
        .read()
    )
    session = onnxruntime.InferenceSession(body, providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"x": one_row()})
    return float(output.sum())


def turnout(name: str, cache_dir: str) -> float:
    import boto3

    from chalicelib.model_files import ArtifactFiles
    from chalicelib.registry.versions import Registry
    from chalicelib.sessions import ModelCache

    registry = Registry(boto3.client("s3"), BUCKET)
    cache = ModelCache(
        registry.open_artifact,
        ArtifactFiles(cache_dir, 10 * 1024 * MIB),
        10 * 1024 * MIB,
        fetch_data_file=registry.open_data_file,
    )
    session = cache.get(registry.get_manifest(name, 1)).session
    (output,) = session.run(None, {"x": one_row()})
    return float(output.sum())


def child_main(arguments: argparse.Namespace) -> None:
    if arguments.child == "floor":
        answer = floor(arguments.name)
    else:
        answer = turnout(arguments.name, arguments.cache)
    seconds = time.perf_counter() - STARTED
    print(json.dumps({"seconds": seconds, "peak": peak_bytes(), "answer": answer}))


# -- the runs ------------------------------------------------------------------------


def api_function_environment() -> dict[str, str]:
    """The variables ``.chalice/config.json`` gives the REST function itself (the
    dev stage): its allocator setting among them."""
    root = Path(__file__).resolve().parent.parent
    config = json.loads((root / ".chalice" / "config.json").read_text())
    function = config["stages"]["dev"]["lambda_functions"]["api_handler"]
    variables: dict[str, str] = function.get("environment_variables", {})
    return variables


def measure(environment: dict[str, str], *options: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.bigmodel", *options],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{options!r} failed:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(
    work: Path, sizes: Sequence[tuple[str, int, bool]], repeat: int
) -> list[dict[str, Any]]:
    import boto3
    from botocore.config import Config

    from chalicelib.registry.versions import Registry
    from tools.devstack.clients import FAKE_CREDENTIALS, aws_environment
    from tools.devstack.processes import start_moto
    from tools.devstack.stage import REGION

    os.environ["TMPDIR"] = str(work)  # moto's temporary files: on disk
    server = start_moto(log=work / "moto.log")
    rows: list[dict[str, Any]] = []
    try:
        # A multi-GB PUT to moto on a busy machine outlasts botocore's 60 s.
        s3 = boto3.client(
            "s3",
            endpoint_url=server.url,
            region_name=REGION,
            aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=Config(read_timeout=900, retries={"max_attempts": 1}),
        )
        s3.create_bucket(Bucket=BUCKET)
        registry = Registry(s3, BUCKET, max_model_bytes=1 << 40)
        environment = aws_environment(server.url)
        turnout_environment = {**environment, **api_function_environment()}
        for name, size, external in sizes:
            print(f"building {name} ({size // MIB} MiB, external={external})")
            path = matmul_chain(work / name, size, external=external)
            total = model_bytes(path)
            print(f"registering {name}")
            registry.register_file(name, str(path))
            shutil.rmtree(work / name)
            cache = work / f"{name}-cache"
            turnout = ["--child", "turnout", "--cache", str(cache)]
            cases = {} if external else {"floor": ["--child", "floor"]}
            cases.update({"Turnout": turnout, "Turnout, from /tmp": turnout})
            environments = {"floor": environment}
            results: dict[str, list[dict[str, float]]] = {how: [] for how in cases}
            for _ in range(repeat):
                shutil.rmtree(cache, ignore_errors=True)
                for how, options in cases.items():
                    print(f"measuring {name}: {how}")
                    results[how].append(
                        measure(
                            environments.get(how, turnout_environment),
                            *options,
                            "--name",
                            name,
                        )
                    )
            answers = {run["answer"] for runs in results.values() for run in runs}
            if len(answers) != 1:
                raise RuntimeError(f"{name}: the answers differ: {sorted(answers)}")
            shutil.rmtree(cache, ignore_errors=True)
            rows.extend(
                {
                    "model": name,
                    "model_bytes": total,
                    "external_data": external,
                    "how": how,
                    "seconds": statistics.median(run["seconds"] for run in runs),
                    "peak_bytes": max(run["peak"] for run in runs),
                    "runs": runs,
                }
                for how, runs in results.items()
            )
            write_results(rows)
    finally:
        server.stop()
    return rows


def write_results(rows: Sequence[dict[str, Any]]) -> None:
    """The table so far, printed and written to bench/results/bigmodel.json."""
    print(table(rows), flush=True)
    results = Path(__file__).resolve().parent / "results" / "bigmodel.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(rows, indent=2) + "\n")


def table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| model | size | how | first request (median) | peak memory (highest) "
        "| peak / size | target |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for row in rows:
        ratio = row["peak_bytes"] / row["model_bytes"]
        target = (
            ""
            if row["how"] == "floor"
            else f"<= {TARGET_RATIO}x: {'met' if ratio <= TARGET_RATIO else 'missed'}"
        )
        kind = "external data" if row["external_data"] else "one file"
        lines.append(
            f"| {row['model']} ({kind}) | {row['model_bytes'] / MIB:,.0f} MiB "
            f"| {row['how']} | {row['seconds']:.2f} s "
            f"| {row['peak_bytes'] / MIB:,.0f} MiB | {ratio:.2f}x | {target} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--external-mib", type=int, default=2560, help="0: skip")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each case")
    parser.add_argument("--keep", type=Path, help="work folder (default: temporary)")
    parser.add_argument("--child", choices=["floor", "turnout"], help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.child:
        child_main(arguments)
        return 0
    sizes = [("big", arguments.size_mib * MIB, False)]
    if arguments.external_mib:
        sizes.append(("huge", arguments.external_mib * MIB, True))
    if arguments.keep:
        arguments.keep.mkdir(parents=True, exist_ok=True)
        rows = run(arguments.keep, sizes, arguments.repeat)
    else:
        with tempfile.TemporaryDirectory(dir="/var/tmp") as work:
            rows = run(Path(work), sizes, arguments.repeat)
    write_results(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
