"""``.dev.env``: the one way into the local stack from a shell. ``make dev`` writes
it at the checkout's root; ``source .dev.env`` gives ``turnout``, the AWS CLI and
boto3 the moto endpoint, fake credentials, the stage's buckets and the API's URL.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path

from tools.devstack.clients import FAKE_CREDENTIALS
from tools.devstack.stage import REGION, ROOT

ENV_FILE = ROOT / ".dev.env"


def dev_environment(
    *,
    endpoint_url: str,
    api_url: str,
    model_bucket: str,
    batch_bucket: str,
    capture_bucket: str,
) -> dict[str, str]:
    """The variables a shell needs to use the stack, in the file's order."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        **FAKE_CREDENTIALS,
        "AWS_DEFAULT_REGION": REGION,
        "TURNOUT_MODEL_BUCKET": model_bucket,
        "TURNOUT_BATCH_BUCKET": batch_bucket,
        "TURNOUT_CAPTURE_BUCKET": capture_bucket,
        "TURNOUT_API_URL": api_url,
    }


def render_env_file(variables: Mapping[str, str]) -> str:
    """The file's text: a comment, then one ``export NAME=value`` line each."""
    lines = ["# Written by make dev for the running stack: source .dev.env"]
    lines += [
        f"export {name}={shlex.quote(value)}" for name, value in variables.items()
    ]
    return "\n".join(lines) + "\n"


def write_env_file(path: Path, variables: Mapping[str, str]) -> None:
    """Write ``variables`` to ``path`` as a file a shell can ``source``."""
    path.write_text(render_env_file(variables))


def remove_env_file(path: Path, variables: Mapping[str, str]) -> None:
    """Remove ``path`` if it still describes this stack (a stopped stack's values
    would send a shell nowhere; another stack's file is left alone)."""
    try:
        if path.read_text() == render_env_file(variables):
            path.unlink()
    except FileNotFoundError:
        pass
