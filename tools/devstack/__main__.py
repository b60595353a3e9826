"""``make dev``: Turnout on this machine, loopback only, with fake AWS credentials.

Starts, and stops again on Ctrl-C, SIGTERM or SIGHUP:

1. a moto server (S3, SQS, CloudWatch) on 127.0.0.1:5000 (``TURNOUT_DEV_MOTO_PORT``);
2. the stage's buckets, the demo models and aliases (``seed.py``);
3. the Lambda emulation ``chalice local`` lacks (``emulator.py``): the batch
   bucket's events to ``handle_batch_upload``, the shard queue's messages to
   ``TURNOUT_DEV_SHARD_WORKERS`` (default 2) ``handle_batch_shard`` workers, and
   each ``@app.schedule`` function every ``TURNOUT_DEV_SCHEDULE_SECONDS`` (60);
4. ``chalice local --stage dev`` on 127.0.0.1:8000 (``TURNOUT_DEV_PORT``), whose
   boto3 clients reach moto through ``AWS_ENDPOINT_URL``;

and writes ``.dev.env`` (``TURNOUT_DEV_ENV_FILE``) for ``source .dev.env``.

Nothing it started outlives it: the first stop signal is the only one acted on
(``make`` forwards SIGTERM after its group got it, and a second interruption
would cut the stop short), each child's whole process group is stopped and
waited for, and on Linux this process adopts orphaned grandchildren (a
subreaper) and ends whatever is left below it before it exits.

``python -m tools.devstack pump ...`` and ``... timer ...`` are the emulator's
own processes, which the stack starts.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from tools.devstack.banner import READY, banner
from tools.devstack.clients import FOREIGN_AWS_VARIABLES
from tools.devstack.emulator import BATCH_FUNCTION, run_event_pump, run_timer
from tools.devstack.env_file import ENV_FILE
from tools.devstack.processes import (
    ChildExitedError,
    become_subreaper,
    stop_descendants,
)
from tools.devstack.stack import DevStack, number_from_environment
from tools.devstack.stage import STAGE

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.devstack",
        description="Run Turnout on this machine: moto server, demo registry, "
        "chalice local and S3 event delivery, all on 127.0.0.1.",
    )
    parser.add_argument(
        "--moto-port",
        type=int,
        default=number_from_environment("TURNOUT_DEV_MOTO_PORT", 5000, "a port number"),
        help="moto server's port (TURNOUT_DEV_MOTO_PORT, default 5000; 0: any)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=number_from_environment("TURNOUT_DEV_PORT", 8000, "a port number"),
        help="chalice local's port (TURNOUT_DEV_PORT, default 8000; 0: any)",
    )
    parser.add_argument("--stage", default=STAGE, help="Chalice stage (dev)")
    parser.add_argument(
        "--env-file",
        type=Path,
        default=Path(os.environ.get("TURNOUT_DEV_ENV_FILE") or ENV_FILE),
        help="where to write the stack's variables for `source` "
        "(TURNOUT_DEV_ENV_FILE, default .dev.env at the checkout's root)",
    )
    parser.add_argument(
        "--no-autoreload",
        dest="autoreload",
        action="store_false",
        help="do not restart chalice local when the code changes",
    )
    commands = parser.add_subparsers(dest="command")
    pump = commands.add_parser("pump", help="(internal) the event pump process")
    pump.add_argument("queue_url")
    pump.add_argument("--stage", default=STAGE)
    pump.add_argument("--function", default=BATCH_FUNCTION)
    pump.add_argument("--messages", action="store_true")
    timer = commands.add_parser("timer", help="(internal) a scheduled function")
    timer.add_argument("function")
    timer.add_argument("--every", type=float, required=True)
    timer.add_argument("--stage", default=STAGE)
    return parser.parse_args(argv)


def _stop(signal_number: int, frame: FrameType | None) -> None:
    """The orderly stop of Ctrl-C, once: later stop signals are ignored, so that
    none cuts the stop short."""
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    if arguments.command == "pump":
        run_event_pump(
            arguments.queue_url,
            stage=arguments.stage,
            function_name=arguments.function,
            messages=arguments.messages,
        )
        return 0
    if arguments.command == "timer":
        run_timer(arguments.function, every=arguments.every, stage=arguments.stage)
        return 0
    # (A shell starting us in the background ignores SIGINT; Ctrl-C must work.)
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, _stop)
    become_subreaper()
    for variable in FOREIGN_AWS_VARIABLES:
        os.environ.pop(variable, None)
    try:
        try:
            with DevStack(
                moto_port=arguments.moto_port,
                api_port=arguments.port,
                stage=arguments.stage,
                autoreload=arguments.autoreload,
                env_file=arguments.env_file,
            ) as stack:
                print(banner(stack), flush=True)
                print(READY, flush=True)
                while True:
                    stack.check_running()
                    time.sleep(1.0)
        finally:
            stop_descendants()
    except KeyboardInterrupt:
        print("\nstopped", flush=True)
        return 0
    except ChildExitedError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
