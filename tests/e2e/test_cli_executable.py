"""The installed ``turnout`` executable against a moto server over real HTTP:
the foundation issue's done-when scenario (register the demo models, set an
alias, show its history, roll it back)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.demo_support import MODEL_BUCKET, MODELS
from tests.e2e.e2e_support import cli_environment

TURNOUT = Path(sys.executable).with_name("turnout")


@pytest.fixture
def endpoint_url() -> Iterator[str]:
    """A moto server on a free loopback port, with the model bucket."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        boto3.client("s3", endpoint_url=url).create_bucket(Bucket=MODEL_BUCKET)
        yield url
    finally:
        server.stop()


def run_turnout(
    endpoint_url: str, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    if not TURNOUT.exists():
        pytest.fail(f"{TURNOUT} is missing: install the project (pip install -e .)")
    environment = cli_environment(endpoint_url)
    completed = subprocess.run(
        [str(TURNOUT), "--bucket", MODEL_BUCKET, *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )
    if check:
        assert (completed.returncode, completed.stderr) == (0, ""), completed
    return completed


def test_the_cli_registers_routes_and_rolls_back(endpoint_url: str) -> None:
    def turnout(*args: str) -> str:
        return run_turnout(endpoint_url, *args).stdout

    def turnout_json(*args: str) -> Any:
        return json.loads(turnout("--json", *args))

    assert turnout("register", "iris", str(MODELS / "iris-v1.onnx")) == (
        "registered iris version 1\n"
    )
    assert (
        turnout_json("register", "iris", str(MODELS / "iris-v2.onnx"))["version"] == 2
    )
    assert turnout("register", "diabetes", str(MODELS / "diabetes.onnx")) == (
        "registered diabetes version 1\n"
    )

    turnout("alias", "set", "iris", "prod", "1=90", "2=10",
            "--actor", "ann", "--reason", "canary v2")  # fmt: skip
    turnout("alias", "set", "iris", "prod", "1=50", "2=50", "--shadow", "2:5",
            "--actor", "bob", "--reason", "half")  # fmt: skip

    history = turnout("alias", "history", "iris", "prod").splitlines()
    assert [line.split()[0] for line in history] == ["REVISION", "1", "2"]
    assert history[1].split()[2:] == ["ann", "1=90", "2=10", "-", "-", "canary", "v2"]
    assert history[2].split()[2:] == ["bob", "1=50", "2=50", "2:5", "-", "half"]

    rolled_back = turnout_json("alias", "rollback", "iris", "prod", "--actor", "cy")
    assert rolled_back["revision"] == 3
    assert rolled_back["weights"] == {"1": 90, "2": 10}
    assert rolled_back["shadow"] is None
    assert rolled_back["reason"] == "rollback to revision 1"
    history_json = turnout_json("alias", "history", "iris", "prod")
    assert [(entry["revision"], entry["actor"]) for entry in history_json] == [
        (1, "ann"),
        (2, "bob"),
        (3, "cy"),
    ]

    refused = run_turnout(endpoint_url, "delete", "iris", "2", check=False)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        "error: version 2 of 'iris' is routed to by alias prod: "
        "move the traffic away first\n"
    )
