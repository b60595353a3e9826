"""``make dev`` fans a file out: ``TURNOUT_BATCH_SHARD_BYTES`` from its own
environment, the shards delivered to two concurrent worker processes, and the
``turnout batch submit --wait`` following the job to its end."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.e2e_support import STARTUP_TIMEOUT, cli_environment
from tests.functional.batch_support import csv_text, expected_csv, iris_rows
from tools.devstack.stack import DevStack
from tools.devstack.stage import ROOT

# This checkout's CLI (the venv's console script may be another checkout's).
TURNOUT = [sys.executable, "-c", "from turnout.cli.main import main; main()"]
SHARD_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def fanning_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """A dev stack started as ``TURNOUT_BATCH_SHARD_BYTES=65536 make dev`` would."""
    log_dir = tmp_path_factory.mktemp("fanning-stack")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TURNOUT_BATCH_SHARD_BYTES", str(SHARD_BYTES))
        with DevStack(
            log_dir=log_dir, startup_timeout=STARTUP_TIMEOUT, shard_workers=2
        ) as stack:
            yield stack


def test_submit_wait_fans_a_file_out_to_the_workers_and_reports_its_end(
    fanning_stack: DevStack, tmp_path: Path
) -> None:
    rows = iris_rows(20_000)
    local = tmp_path / "big.csv"
    local.write_text(csv_text(rows))
    environment = cli_environment(
        fanning_stack.endpoint_url,
        TURNOUT_BATCH_BUCKET=fanning_stack.batch_bucket,
        PYTHONPATH=str(ROOT),
    )

    completed = subprocess.run(
        [*TURNOUT, "--json", "batch", "submit", str(local), "iris@2", "--wait"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr + fanning_stack.logs()
    answer = json.loads(completed.stdout)
    manifest = answer["manifest"]
    assert answer["state"] == "succeeded"
    assert len(manifest["shards"]) >= local.stat().st_size // SHARD_BYTES
    assert manifest["rows"] == {"read": 20_000, "predicted": 20_000, "rejected": 0}
    out = fanning_stack.s3.get_object(
        Bucket=fanning_stack.batch_bucket, Key=manifest["output"]["key"]
    )["Body"].read()
    assert out.decode() == expected_csv(2, rows)
    # Both workers predicted shards.
    for pump in fanning_stack.shard_pumps:
        assert "batch_shard_predicted" in pump.log_tail(1_000_000), pump.name
