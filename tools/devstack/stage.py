"""The Chalice stage the dev stack runs: the checkout, the stage's name and
environment, and the loopback address and region everything uses."""

from __future__ import annotations

import json
from pathlib import Path

from chalicelib.config import Settings

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
REGION = "us-east-1"
STAGE = "dev"


def stage_environment(stage: str = STAGE, project_dir: Path = ROOT) -> dict[str, str]:
    """The environment variables ``.chalice/config.json`` gives ``stage``'s API
    handler: the top level's, then the stage's own."""
    config = json.loads((project_dir / ".chalice" / "config.json").read_text())
    environment = dict(config.get("environment_variables", {}))
    environment.update(config["stages"][stage].get("environment_variables", {}))
    return environment


def stage_settings(stage: str = STAGE, project_dir: Path = ROOT) -> Settings:
    """The settings ``stage`` runs with (its buckets, default alias...)."""
    return Settings.from_env(stage_environment(stage, project_dir))
