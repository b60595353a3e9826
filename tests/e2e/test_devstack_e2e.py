"""``make dev`` as a developer runs it: the banner, then Ctrl-C or SIGTERM stops
every process it started (chalice local's reloader worker included)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.e2e_support import HttpClient, eventually
from tools.devstack.processes import answers_http
from tools.devstack.stage import ROOT

READY = "ready (Ctrl-C stops everything)"
STARTUP_TIMEOUT = 120.0
MAKE_DEV = ["make", "--no-print-directory", "-o", ".venv/.installed", "dev"]


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


def processes_of_the_checkout(marker: str) -> dict[int, str]:
    """Every live process whose command line names the checkout, or whose
    environment holds ``marker`` (``NAME=value``: moto and the pumps name no
    path), less this test process and its parents: pid -> command line."""
    ours = {os.getpid()}
    pid = os.getpid()
    while pid > 1:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        pid = int(stat[1])
        ours.add(pid)
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in ours:
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        marked = marker.encode() in environment
        if (str(ROOT) in command or marked) and is_alive(int(entry.name)):
            found[int(entry.name)] = command
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def assert_the_env_file_reaches_the_stack(env_file: Path, api_port: int) -> None:
    """``source`` the file in a shell with no AWS or Turnout setting of its own,
    then list the models with the CLI and print the API's URL."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "TURNOUT_"))
    }
    environment["PATH"] = f"{Path(sys.executable).parent}:{environment['PATH']}"
    shell = subprocess.run(
        ["bash", "-c", f"source {env_file} && turnout models && echo $TURNOUT_API_URL"],
        env=environment,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shell.returncode == 0, shell.stderr
    assert "iris" in shell.stdout and "diabetes" in shell.stdout, shell.stdout
    assert shell.stdout.endswith(f"http://127.0.0.1:{api_port}\n"), shell.stdout


def stack_process(make: subprocess.Popen[str]) -> int:
    """The pid of the ``python -m tools.devstack`` that ``make`` runs (not one of
    its ``pump`` or ``timer`` children)."""
    (devstack,) = [
        pid
        for pid in [*descendants(make.pid), make.pid]
        if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:4]
        in ([b"-m", b"tools.devstack", b""], [b"-m", b"tools.devstack"])
    ]
    return devstack


def repeat_until_gone(make: subprocess.Popen[str], stop_signal: int) -> None:
    """Send ``stop_signal`` to make's group, and again every few milliseconds to
    the stack's process until make has exited (an impatient operator, or a
    supervisor that repeats itself)."""
    devstack = stack_process(make)
    os.killpg(make.pid, stop_signal)
    deadline = time.monotonic() + 30.0
    while make.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(devstack, stop_signal)
        time.sleep(0.005)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(
    "how",
    [
        "ctrl-c",
        "sigterm-to-make",
        "sigterm-to-its-group",
        "sigterm-repeated",
        "terminal-closed",
        "stack-killed",
    ],
)
def test_nothing_make_dev_started_survives_however_it_is_stopped(
    how: str, tmp_path: Path
) -> None:
    api_port, moto_port = free_port(), free_port()
    marker = f"TURNOUT_DEV_PORT={api_port}"
    before = processes_of_the_checkout(marker)
    env_file = tmp_path / ".dev.env"
    environment = {
        **os.environ,
        "TURNOUT_DEV_PORT": str(api_port),
        "TURNOUT_DEV_MOTO_PORT": str(moto_port),
        "TURNOUT_DEV_ENV_FILE": str(env_file),
    }
    make = subprocess.Popen(
        # The test's interpreter, not the checkout's .venv (a worktree has none).
        [*MAKE_DEV, f"PY={sys.executable}"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # make leads a group, as in a terminal
    )
    try:
        output = read_until_ready(make)
        api = HttpClient(f"http://127.0.0.1:{api_port}")
        for _ in range(5):
            reply = api.post_json(
                "/models/iris/predict", {"instances": [[5.1, 3.5, 1.4, 0.2]]}
            )
            assert reply.status == 200, reply.body
        assert output.rstrip().endswith(f"\n{READY}")
        assert "iris@prod = 1=90 2=10, iris@staging = 2=100" in output
        assert f"  source {env_file}\n" in output
        assert_the_env_file_reaches_the_stack(env_file, api_port)
        started = set(processes_of_the_checkout(marker)) - set(before)
        assert len(started) >= 5, (started, output)  # make, devstack, moto, ...

        if how == "ctrl-c":  # the terminal sends SIGINT to the foreground group
            os.killpg(make.pid, signal.SIGINT)
        elif how == "sigterm-to-make":
            make.send_signal(signal.SIGTERM)
        elif how == "sigterm-to-its-group":
            os.killpg(make.pid, signal.SIGTERM)
        elif how == "terminal-closed":
            os.killpg(make.pid, signal.SIGHUP)
        elif how == "stack-killed":  # no cleanup at all: the OOM killer, kill -9
            os.kill(stack_process(make), signal.SIGKILL)
        else:  # make forwards it: the stop itself must not be cut short
            repeat_until_gone(make, signal.SIGTERM)
        make.wait(60)

        def survivors() -> dict[int, str]:
            return {
                pid: command
                for pid, command in processes_of_the_checkout(marker).items()
                if pid not in before
            }

        eventually(
            lambda: not survivors(),
            timeout=10.0,
            message=lambda: f"processes make dev started still run: {survivors()}",
        )
        if how != "stack-killed":  # a killed stack cannot tidy up
            assert not env_file.exists()  # it would send a shell to a stopped stack
    finally:
        for pid in set(processes_of_the_checkout(marker)) - set(before):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if make.poll() is None:
            make.kill()
            make.wait(10)
