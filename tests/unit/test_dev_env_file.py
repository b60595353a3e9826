"""``.dev.env``, the file ``source`` loads to use the dev stack from a shell."""

from __future__ import annotations

from tools.devstack.env_file import dev_environment, render_env_file


def test_the_file_exports_the_endpoint_credentials_buckets_and_api() -> None:
    variables = dev_environment(
        endpoint_url="http://127.0.0.1:5000",
        api_url="http://127.0.0.1:8000",
        model_bucket="turnout-models-dev",
        batch_bucket="turnout-batch-dev",
        capture_bucket="turnout-capture-dev",
    )

    assert render_env_file(variables) == (
        "# Written by make dev for the running stack: source .dev.env\n"
        "export AWS_ENDPOINT_URL=http://127.0.0.1:5000\n"
        "export AWS_ACCESS_KEY_ID=testing\n"
        "export AWS_SECRET_ACCESS_KEY=testing\n"
        "export AWS_DEFAULT_REGION=us-east-1\n"
        "export TURNOUT_MODEL_BUCKET=turnout-models-dev\n"
        "export TURNOUT_BATCH_BUCKET=turnout-batch-dev\n"
        "export TURNOUT_CAPTURE_BUCKET=turnout-capture-dev\n"
        "export TURNOUT_API_URL=http://127.0.0.1:8000\n"
    )


def test_a_value_a_shell_would_split_is_quoted() -> None:
    assert render_env_file({"X": "a b'c"}) == (
        "# Written by make dev for the running stack: source .dev.env\n"
        "export X='a b'\"'\"'c'\n"
    )
