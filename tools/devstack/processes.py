"""The dev stack's child processes, and how they stop: each child leads a process
group of its own (so Ctrl-C reaches ``make dev`` alone, and stopping a child stops
all it started, chalice local's reloader worker included) and, on Linux, dies
with its parent. ``stop()`` waits until the whole group is gone, not just its
leader."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from tools.devstack.clients import aws_environment
from tools.devstack.stage import LOOPBACK, ROOT, STAGE

logger = logging.getLogger("devstack")

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl() -> Callable[..., int] | None:
    """Linux's prctl(2), or None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    return prctl


def set_parent_death_signal() -> None:
    """Ask Linux to SIGTERM this process when its parent dies (elsewhere: no-op)."""
    prctl = _prctl()
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when its parent dies."""
    prctl = _prctl()  # loaded here, not in the child
    if prctl is None:
        return None
    parent = os.getpid()

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request
            os._exit(1)

    return set_death_signal


def become_subreaper() -> bool:
    """Adopt the orphans of this process's descendants (Linux): a grandchild whose
    parent died (chalice local's reloader worker) is re-parented here, not to
    init, so ``stop_descendants`` still finds it. False where unsupported."""
    prctl = _prctl()
    return prctl is not None and prctl(_PR_SET_CHILD_SUBREAPER, 1) == 0


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (Linux /proc; empty elsewhere)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in map(int, (task / "children").read_text().split()):
                found |= {child} | descendants(child)
    return found


def stop_descendants(timeout: float = 5.0) -> None:
    """SIGTERM every process below this one, SIGKILL what is left after
    ``timeout``, and reap them: the last sweep of ``make dev``."""
    for signal_number in (signal.SIGTERM, signal.SIGKILL):
        for pid in descendants(os.getpid()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal_number)
        deadline = time.monotonic() + timeout
        while _reap_children() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not descendants(os.getpid()):
            return


def _reap_children(group: int = -1) -> bool:
    """Reap this process's ended children (of process group ``group`` when
    given); whether some child (of the group) is still running."""
    while True:
        try:
            pid, _ = os.waitpid(-group if group > 0 else -1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


class ChildExitedError(RuntimeError):
    """A child process ended while it was expected to run."""


class ChildProcess:
    """A child in a session of its own: ``stop()`` ends it and all it started.

    Its output goes to ``log`` (appended), or to this process's terminal when
    ``log`` is None, or nowhere when ``log`` is ``os.devnull``.
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        environment: Mapping[str, str],
        log: Path | None,
        cwd: Path = ROOT,
    ) -> None:
        self.name = name
        self.log = log
        self._output: IO[bytes] | None = log.open("ab") if log is not None else None
        self.process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(environment),
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT if self._output is not None else None,
            start_new_session=True,
            preexec_fn=_die_with_parent(),
        )

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, characters: int = 4000) -> str:
        """The end of the child's log, for error messages ("" without a log)."""
        if self.log is None or str(self.log) == os.devnull or not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")[-characters:]

    def check_running(self) -> None:
        if not self.running:
            tail = self.log_tail()
            raise ChildExitedError(
                f"{self.name} exited with status {self.process.returncode}"
                + (f"; the end of {self.log}:\n{tail}" if tail else "")
            )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the child's process group, SIGKILL it after ``timeout``, and
        return once every process of the group has ended."""
        try:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.process.wait()
            # The leader gone, the rest of its group (chalice local's reloader
            # worker) may still run: wait for it too.
            deadline = time.monotonic() + timeout
            while self._group_exists():
                if time.monotonic() > deadline:
                    self._signal_group(signal.SIGKILL)
                    deadline = time.monotonic() + timeout
                time.sleep(0.05)
        finally:
            if self._output is not None:
                self._output.close()

    def _group_exists(self) -> bool:
        """Whether a process of the child's group still runs; reaps the ones this
        process adopted (see ``become_subreaper``)."""
        _reap_children(self.process.pid)
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return any(_is_running(pid) for pid in _group_members(self.process.pid))

    def _signal_group(self, signal_number: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal_number)


def _group_members(group: int) -> list[int]:
    """The processes of process group ``group`` (Linux /proc; elsewhere, the
    group is taken to be its leader)."""
    if not Path("/proc/self/stat").exists():
        return [group]
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == group:
                    members.append(int(entry.name))
    return members


def _is_running(pid: int) -> bool:
    """False for a process that has ended (a zombie waits only for its reaping)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return not Path("/proc/self/stat").exists()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def free_port() -> int:
    """A loopback port nobody listens on right now (the OS's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As servers do, so that a port left in TIME_WAIT counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def answers_http(url: str) -> bool:
    """True when something at ``url`` answers HTTP, whatever its status."""
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, urllib.error.URLError):
        return False


class Server:
    """A child process that serves HTTP on a loopback port.

    ``port=0`` picks a free port, and picks again if the child dies at startup
    (another process may take a free port between the pick and the bind).
    """

    _ATTEMPTS = 3

    def __init__(
        self,
        name: str,
        command_for: Callable[[int], Sequence[str]],
        *,
        port: int,
        probe_path: str,
        environment: Mapping[str, str],
        log: Path | None,
        port_variable: str = "",
        before_launch: Callable[[int], None] | None = None,
    ) -> None:
        self.name = name
        self._command_for = command_for
        self._requested_port = port
        self._probe_path = probe_path
        self._environment = environment
        self._log = log
        self._port_variable = port_variable
        self._before_launch = before_launch
        self._attempts_left = self._ATTEMPTS if port == 0 else 1
        self.port = 0
        self.child: ChildProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        """Launch the child without waiting for it (see ``wait_until_ready``)."""
        self._attempts_left -= 1
        self.port = self._requested_port or free_port()
        if self._requested_port and not port_is_free(self.port):
            hint = (
                f": set {self._port_variable} to use another"
                if self._port_variable
                else ""
            )
            raise ChildExitedError(
                f"{self.name} cannot listen on {LOOPBACK}:{self.port}, "
                f"the port is taken{hint}"
            )
        if self._before_launch is not None:
            self._before_launch(self.port)
        self.child = ChildProcess(
            self.name,
            self._command_for(self.port),
            environment=self._environment,
            log=self._log,
        )

    def wait_until_ready(self, timeout: float) -> None:
        """Poll until the server answers HTTP; ChildExitedError or TimeoutError."""
        assert self.child is not None, "start() the server first"
        deadline = time.monotonic() + timeout
        while not answers_http(self.url + self._probe_path):
            if not self.child.running:
                if self._attempts_left <= 0:
                    self.child.check_running()
                logger.info(
                    "%s did not start on port %d, retrying", self.name, self.port
                )
                self.child.stop()
                self.start()
            elif time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name} did not answer on {self.url} within {timeout:.0f} s; "
                    f"the end of its log:\n{self.child.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()


def start_moto(
    port: int = 0, *, log: Path | None = None, timeout: float = 60.0
) -> Server:
    """A moto server (all services, one in-memory account) on ``LOOPBACK:port``."""
    server = Server(
        "moto server",
        lambda chosen: [
            sys.executable,
            "-m",
            "moto.server",
            "-H",
            LOOPBACK,
            "-p",
            str(chosen),
        ],
        port=port,
        probe_path="/moto-api/",
        environment=aws_environment(None),
        log=log,
        port_variable="TURNOUT_DEV_MOTO_PORT",
    )
    server.start()
    try:
        server.wait_until_ready(timeout)
    except BaseException:
        server.stop()
        raise
    return server


def start_chalice_local(
    endpoint_url: str,
    port: int = 0,
    *,
    stage: str = STAGE,
    autoreload: bool = True,
    log: Path | None = None,
    project_dir: Path = ROOT,
    before_launch: Callable[[int], None] | None = None,
) -> Server:
    """Launch ``chalice local`` for ``stage`` with its AWS clients on
    ``endpoint_url``; call ``wait_until_ready`` on the result before using it.
    ``before_launch`` is called with the port before each launch."""

    def command(chosen: int) -> list[str]:
        return [
            # Its reloader's worker dies with the reloader (see the module).
            sys.executable,
            "-m",
            "tools.devstack.chalice_local",
            "--project-dir",
            str(project_dir),
            "local",
            "--stage",
            stage,
            "--host",
            LOOPBACK,
            "--port",
            str(chosen),
            "--autoreload" if autoreload else "--no-autoreload",
        ]

    server = Server(
        "chalice local",
        command,
        port=port,
        probe_path="/v2/health/live",
        environment=aws_environment(endpoint_url),
        log=log,
        port_variable="TURNOUT_DEV_PORT",
        before_launch=before_launch,
    )
    server.start()
    return server
