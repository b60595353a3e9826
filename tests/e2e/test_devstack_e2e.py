"""``make dev`` as a developer runs it: the banner, then Ctrl-C or SIGTERM stops
every process it started (chalice local's reloader worker included)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tools.devstack import ROOT, answers_http

READY = "ready (Ctrl-C stops everything)"
STARTUP_TIMEOUT = 120.0


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Linux /proc)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found |= {child} | descendants(child)
    return found


def is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has stopped; only its parent's wait is missing


def read_until_ready(process: subprocess.Popen[str]) -> str:
    """Collect the output until the ready line; the rest keeps draining."""
    lines: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.strip() == READY:
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    ready.wait(STARTUP_TIMEOUT)
    output = "".join(lines)
    assert READY in output, f"make dev did not get ready:\n{output}"
    return output


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(
    "stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"]
)
def test_make_dev_prints_its_urls_and_a_signal_stops_all_it_started(
    stop_signal: signal.Signals,
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.devstack", "--moto-port", "0", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    started: set[int] = set()
    try:
        output = read_until_ready(process)
        started = descendants(process.pid)
        api = re.search(r"REST API\s+(http://127\.0\.0\.1:\d+)", output)
        moto = re.search(r"moto S3 \+ SQS\s+(http://127\.0\.0\.1:\d+)", output)
        assert api and moto, output
        assert f"curl -s {api[1]}/v2/models/iris/infer" in output
        assert "s3://turnout-batch-dev/incoming/iris/iris.csv" in output
        assert "> /tmp/iris.csv" in output  # not in the directory chalice watches
        # moto, the pump, and chalice local's reloader with its worker.
        assert len(started) >= 4, output
        assert answers_http(api[1]) and answers_http(moto[1])

        process.send_signal(stop_signal)
        process.wait(60)

        assert process.returncode == 0
        assert [pid for pid in started if is_alive(pid)] == []
        assert not answers_http(api[1])
        assert not answers_http(moto[1])
    finally:
        for pid in [process.pid, *started]:
            if is_alive(pid):
                os.kill(pid, signal.SIGKILL)
        process.wait(10)
