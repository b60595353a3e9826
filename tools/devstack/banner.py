"""What ``make dev`` prints once the stack answers: where things are, and
commands to paste."""

from __future__ import annotations

import json
from pathlib import Path

from chalicelib.config import INCOMING_PREFIX
from tools.devstack.emulator import BATCH_FUNCTION, SHARD_FUNCTION
from tools.devstack.seed import DEMO_ALIASES
from tools.devstack.stack import DevStack
from tools.devstack.stage import ROOT

# The last line make dev prints, which the README quotes: keep them in step.
READY = "ready (Ctrl-C stops everything)"


IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
IRIS_CSV = (
    "sepal_length,sepal_width,petal_length,petal_width\\n"
    "5.1,3.5,1.4,0.2\\n6.7,3.0,5.2,2.3\\n"
)


def banner(stack: DevStack) -> str:
    """Where things are, and commands to paste (``READY`` follows it)."""
    api, moto, batch = stack.api_url, stack.endpoint_url, stack.batch_bucket
    tensor = {"name": "float_input", "shape": [1, 4], "datatype": "FP32"}
    v2_request = json.dumps({"inputs": [{**tensor, "data": IRIS_ROW}]})
    aliases = ", ".join(
        f"{name}@{alias} = "
        + " ".join(f"{version}={weight:g}" for version, weight in weights.items())
        for name, alias, weights in DEMO_ALIASES
    )
    upload = f"{INCOMING_PREFIX}iris/iris.csv"
    env_file, where = _shell_path(stack.env_file)
    lines = [
        f"Turnout dev stack (stage {stack.stage}, loopback only, fake AWS credentials)",
        f"  REST API       {api}   (chalice local)",
        f"  moto S3 + SQS  {moto}   (the app's AWS_ENDPOINT_URL)",
        f"  model bucket   {stack.model_bucket}: iris v1 + v2, diabetes v1",
        f"  aliases        {aliases}",
        f"  batch bucket   {batch}: uploads under {INCOMING_PREFIX} go to "
        f"{BATCH_FUNCTION}",
        f"  fan-out        files over {stack.shard_bytes} bytes: shards on "
        f"{stack.shard_queue_name} -> {len(stack.shard_pumps)} {SHARD_FUNCTION} "
        "workers",
        *(
            [
                f"  scheduled      {', '.join(stack.scheduled_functions)} every "
                f"{stack.schedule_seconds:g} s (TURNOUT_DEV_SCHEDULE_SECONDS)",
            ]
            if stack.scheduled_functions
            else []
        ),
        "",
        "Predict (Open Inference Protocol V2, then the simple format):",
        f"  curl -s {api}/v2/models/iris/infer -H 'Content-Type: application/json' \\",
        f"    -d '{v2_request}'",
        f"  curl -s {api}/models/iris/predict -H 'Content-Type: application/json' \\",
        "    -H 'X-Turnout-Alias: staging' \\",
        f"    -d '{{\"instances\": [{IRIS_ROW}]}}'",
        "",
        # Files in the project would restart chalice local (it watches the
        # project directory) and be left behind as untracked files: use /tmp.
        f"Use it from another shell{where} (files go to /tmp):",
        "  source .venv/bin/activate   # turnout is in .venv/bin",
        f"  source {env_file}",
        "  turnout models",
        "  turnout alias show iris prod",
        "  turnout alias set iris staging 1=50 2=50 --reason 'try v1 too'",
        f"  printf '{IRIS_CSV}' > /tmp/iris.csv",
        "  turnout batch submit /tmp/iris.csv iris --wait",
        f"  aws s3 cp /tmp/iris.csv s3://{batch}/{upload}   # or with the AWS CLI",
        f"  aws s3 ls --recursive s3://{batch}/outgoing/",
        "",
        "Compare versions on evidence (docs/evidence.md), from another shell:",
        "  make demo-traffic            # iris traffic and labels, version 2 better",
        "  turnout report iris --since 1h --html /tmp/report.html",
    ]
    return "\n".join(lines)


def _shell_path(env_file: Path | None) -> tuple[str, str]:
    """How the banner names ``env_file``, and where the shell should be."""
    if env_file is None:
        return "<no environment file>", ""
    if env_file.is_relative_to(ROOT):
        return str(env_file.relative_to(ROOT)), ", in this directory"
    return str(env_file), ""
