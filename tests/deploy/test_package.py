"""The deployment package itself (``chalice package``, layer trimmed by
``tools.package``): within Lambda's limits, wired by its Terraform, and running
both handlers from the unzipped folders in a bare Python 3.12 against the
IAM-enforcing moto server, with each function's own keys."""

from __future__ import annotations

import json
import subprocess
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from app import app
from bench.rest import proxy_event
from chalicelib.aliases.store import AliasStore
from chalicelib.clock import utc_now
from chalicelib.registry.versions import Registry
from chalicelib.rollout import operations
from chalicelib.rollout.plan import Plan
from chalicelib.rollout.store import RolloutStore
from tests.deploy.iam_support import STAGE, IamStack, load_policy
from tests.functional.batch_support import (
    csv_text,
    expected_csv,
    function_environment,
    iris_rows,
)
from tools.devstack.stage import stage_environment
from tools.package import SHUTDOWN_EXTENSION, lambda_python, unpack

pytestmark = pytest.mark.package

MB = 1024 * 1024
DIRECT_UPLOAD_LIMIT = 50 * MB  # a zip handed to Lambda's API (chalice deploy)
UNZIPPED_LIMIT = 250 * MB  # the function's code and all its layers, unzipped
RUNTIME = Path(__file__).with_name("artifact_bootstrap_child.py")


def unzipped_bytes(archive: Path) -> int:
    with zipfile.ZipFile(archive) as package:
        return sum(entry.file_size for entry in package.infolist())


def terraform(package: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((package / "chalice.tf.json").read_text())
    return document


def test_every_zip_fits_a_direct_upload_and_the_whole_fits_unzipped(
    package: Path,
) -> None:
    app_zip, layer_zip = package / "deployment.zip", package / "layer-deployment.zip"

    assert app_zip.stat().st_size <= DIRECT_UPLOAD_LIMIT
    assert layer_zip.stat().st_size <= DIRECT_UPLOAD_LIMIT
    assert unzipped_bytes(app_zip) + unzipped_bytes(layer_zip) <= UNZIPPED_LIMIT
    with zipfile.ZipFile(app_zip) as code:
        names = code.namelist()
    shipped = {name.split("/")[0] for name in names}
    # The app (and its bytecode), the domain code and Chalice's runtime; nothing
    # of models/, bench/, tests/, tools/, the operator's CLI (turnout/cli/) or
    # the data scientist's publish and its converters (turnout/publish/).
    assert shipped == {"app.py", "__pycache__", "chalicelib", "chalice"}
    assert not [name for name in names if name.startswith("turnout/")]
    assert not [name for name in names if "cli" in name.rsplit("/", 1)[-1]]


def test_terraform_wires_the_batch_uploads_and_the_keyed_api(package: Path) -> None:
    document = terraform(package)
    resources = document["resource"]
    functions = resources["aws_lambda_function"]

    notification = resources["aws_s3_bucket_notification"]
    assert list(notification.values()) == [
        {
            "bucket": "turnout-batch-dev",
            "lambda_function": [
                {
                    "events": ["s3:ObjectCreated:*"],
                    "lambda_function_arn": "${aws_lambda_function."
                    "handle_batch_upload.arn}",
                    "filter_prefix": "incoming/",
                },
                {
                    "events": ["s3:ObjectCreated:*"],
                    "lambda_function_arn": "${aws_lambda_function."
                    "handle_feedback_upload.arn}",
                    "filter_prefix": "feedback/",
                },
            ],
        }
    ]
    [mapping] = resources["aws_lambda_event_source_mapping"].values()
    assert mapping["batch_size"] == 1
    assert mapping["event_source_arn"].endswith(":turnout-batch-shards-dev")
    assert mapping["function_name"] == "${aws_lambda_function.handle_batch_shard.arn}"
    shard = functions["handle_batch_shard"]
    assert (shard["memory_size"], shard["timeout"]) == (3008, 900)
    assert shard["reserved_concurrent_executions"] == 2
    shard_role = resources["aws_iam_role_policy"]["handle_batch_shard_role"]
    assert json.loads(shard_role["policy"]) == load_policy(STAGE, "shard")
    batch, api = functions["handle_batch_upload"], functions["api_handler"]
    assert (batch["runtime"], batch["memory_size"], batch["timeout"]) == (
        "python3.12",
        3008,
        900,
    )
    assert batch["reserved_concurrent_executions"] == 2
    assert (api["runtime"], api["memory_size"], api["timeout"]) == (
        "python3.12",
        2048,
        30,
    )
    layer = ["${aws_lambda_layer_version.managed-layer.arn}"]
    assert batch["layers"] == api["layers"] == layer
    # /tmp as the stage's TURNOUT_EPHEMERAL_STORAGE_MB says (Chalice cannot).
    assert [function["ephemeral_storage"] for function in functions.values()] == [
        {"size": 2048}
    ] * len(functions)
    policies = resources["aws_iam_role_policy"]
    assert json.loads(policies["api_handler_role"]["policy"]) == load_policy(
        STAGE, "api"
    )
    assert json.loads(policies["handle_batch_upload_role"]["policy"]) == load_policy(
        STAGE, "batch"
    )
    labels = functions["handle_feedback_upload"]
    assert (labels["memory_size"], labels["timeout"]) == (1024, 300)
    assert labels["layers"] == layer
    assert json.loads(policies["handle_feedback_upload_role"]["policy"]) == load_policy(
        STAGE, "feedback"
    )
    assert resources["aws_api_gateway_rest_api"]["rest_api"]["body"] == (
        "${local.chalice_api_swagger}"
    )
    swagger = json.loads(document["locals"]["chalice_api_swagger"])
    assert swagger["securityDefinitions"] == {
        "api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"}
    }
    keyed = {
        (path, method): operation.get("security")
        for path, operations in swagger["paths"].items()
        for method, operation in operations.items()
    }
    assert keyed.pop(("/v2/health/live", "get")) is None
    assert keyed.pop(("/v2/health/ready", "get")) is None
    assert set(map(json.dumps, keyed.values())) == {'[{"api_key": []}]'}


def invoke(
    iam_stack: IamStack,
    tree: tuple[Path, Path],
    function: str,
    handler: str,
    events: list[dict[str, Any]],
    cache: Path,
    changes: dict[str, str] | None = None,
    absent: tuple[str, ...] = (),
) -> list[Any]:
    """Run ``handler`` on ``events`` in a fresh bare interpreter on the unzipped
    package, with ``function``'s keys and environment (with ``changes``); its
    answers. None of the ``absent`` packages may have been imported."""
    command, python_environment = lambda_python(*tree)
    environment = {
        **stage_environment(STAGE),
        **(config_environment(function)),
        **iam_stack.credentials[function].environment(iam_stack.endpoint_url),
        **python_environment,
        "TURNOUT_MODEL_CACHE_DIR": str(cache),
        "PATH": "/usr/bin:/bin",
        "HOME": str(cache),
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        **(changes or {}),
    }
    completed = subprocess.run(
        [*command, str(RUNTIME), handler],
        input=json.dumps(events),
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["foreign_modules"] == []
    # Every module came with its bytecode: none was compiled at the cold start.
    assert result["compiled_at_import"] == []
    assert sorted(set(absent) & set(result["packages"])) == []
    answers: list[Any] = result["answers"]
    return answers


def config_environment(function: str) -> dict[str, str]:
    """The variables ``.chalice/config.json`` gives ``function`` beyond its stage."""
    name = {
        "api": "api_handler",
        "batch": "handle_batch_upload",
        "shard": "handle_batch_shard",
        "rollout": "evaluate_rollouts",
    }[function]
    return function_environment(name, STAGE)


def s3_event(bucket: str, key: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "awsRegion": "us-east-1",
                "s3": {"bucket": {"name": bucket}, "object": {"key": key}},
            }
        ]
    }


def test_the_unzipped_package_serves_and_predicts_a_batch_file(
    package: Path, iam_stack: IamStack, tmp_path: Path
) -> None:
    functions = terraform(package)["resource"]["aws_lambda_function"]
    tree = unpack(package, tmp_path / "lambda")
    body = {
        "inputs": [
            {
                "name": "float_input",
                "shape": [1, 4],
                "datatype": "FP32",
                "data": [6.7, 3.0, 5.2, 2.3],
            }
        ]
    }
    headers = {"Content-Type": "application/json", "X-Turnout-Alias": "staging"}
    live, infer = invoke(
        iam_stack,
        tree,
        "api",
        functions["api_handler"]["handler"],
        [
            proxy_event(app, "GET", "/v2/health/live", {}, ""),
            proxy_event(
                app, "POST", "/v2/models/iris/infer", headers, json.dumps(body)
            ),
        ],
        tmp_path / "api-cache",
        absent=("boto3", "s3transfer"),  # clients come from botocore
    )

    assert (live["statusCode"], json.loads(live["body"])) == (200, {"live": True})
    assert infer["statusCode"] == 200, infer["body"]
    assert infer["headers"]["X-Model-Version"] == "2"
    assert json.loads(infer["body"])["outputs"][0]["data"] == [2]

    # The same function preloading its alias during init, with its own keys.
    [preloaded] = invoke(
        iam_stack,
        tree,
        "api",
        functions["api_handler"]["handler"],
        [proxy_event(app, "POST", "/v2/models/iris/infer", headers, json.dumps(body))],
        tmp_path / "api-preload-cache",
        {"TURNOUT_PRELOAD": "iris@staging"},
    )
    assert preloaded["statusCode"] == 200, preloaded["body"]

    rows = iris_rows(50)
    key = "incoming/iris@1/artifact.csv"
    bucket = iam_stack.settings.batch_bucket
    iam_stack.admin.put_object(Bucket=bucket, Key=key, Body=csv_text(rows).encode())
    [answer] = invoke(
        iam_stack,
        tree,
        "batch",
        functions["handle_batch_upload"]["handler"],
        [s3_event(bucket, key)],
        tmp_path / "batch-cache",
    )

    assert answer["action"] == "processed"
    assert answer["manifest"]["status"] == "succeeded"
    output = iam_stack.admin.get_object(
        Bucket=bucket, Key=answer["manifest"]["output"]["key"]
    )
    assert output["Body"].read().decode() == expected_csv(1, rows)

    # A file over the shard size: split by the batch function, its shards
    # predicted and assembled by the shard function, both from the package.
    rows = iris_rows(3_000)
    key = "incoming/iris@2/artifact-fanned.csv"
    iam_stack.admin.put_object(Bucket=bucket, Key=key, Body=csv_text(rows).encode())
    changes = {"TURNOUT_BATCH_SHARD_BYTES": "16384"}
    [handed] = invoke(
        iam_stack,
        tree,
        "batch",
        functions["handle_batch_upload"]["handler"],
        [s3_event(bucket, key)],
        tmp_path / "batch-cache",
        changes,
    )
    sqs = iam_stack.client("sqs", iam_stack.admin_keys)
    messages: list[dict[str, Any]] = []
    while received := sqs.receive_message(
        QueueUrl=iam_stack.shard_queue_url, MaxNumberOfMessages=10
    ).get("Messages", []):
        messages += received
    shard_events = [
        {
            "Records": [
                {
                    "messageId": message["MessageId"],
                    "receiptHandle": message["ReceiptHandle"],
                    "body": message["Body"],
                    "attributes": {"ApproximateReceiveCount": "1"},
                    "eventSource": "aws:sqs",
                }
            ]
        }
        for message in messages
    ]
    answers = invoke(
        iam_stack,
        tree,
        "shard",
        functions["handle_batch_shard"]["handler"],
        shard_events,
        tmp_path / "shard-cache",
        changes,
    )
    for message in messages:
        sqs.delete_message(
            QueueUrl=iam_stack.shard_queue_url, ReceiptHandle=message["ReceiptHandle"]
        )

    assert handed["action"] == "fanned_out"
    assert len(messages) == handed["manifest"]["progress"]["shards"] > 1
    assert sorted(answer["action"] for [answer] in answers) == ["assembled"] + [
        "shard_done"
    ] * (len(messages) - 1)
    output = iam_stack.admin.get_object(
        Bucket=bucket, Key="outgoing/iris@2/artifact-fanned.csv.out"
    )
    assert output["Body"].read().decode() == expected_csv(2, rows)


def test_the_layer_ships_no_c_api_library_and_stays_under_35_mb(
    package: Path,
) -> None:
    # onnxruntime's Python module links libonnxruntime_providers_shared only
    # (readelf -d lists no libonnxruntime.so): the 34 MB C API library is left
    # out, and the handlers' run from the unzipped package proves nothing
    # needed it.
    layer_zip = package / "layer-deployment.zip"
    with zipfile.ZipFile(layer_zip) as layer:
        names = layer.namelist()
    assert not [name for name in names if "/libonnxruntime.so" in name]
    assert [
        name
        for name in names
        if name.endswith("onnxruntime_pybind11_state")
        or "onnxruntime_pybind11_state." in name
    ]
    assert layer_zip.stat().st_size <= 35_000_000


def test_the_layer_ships_the_shutdown_extension_as_an_executable(
    package: Path,
) -> None:
    # Lambda runs every executable under /opt/extensions/ as an external
    # extension: this one subscribes to SHUTDOWN, so the runtime gets SIGTERM.
    with zipfile.ZipFile(package / "layer-deployment.zip") as layer:
        entry = layer.getinfo("extensions/turnout-shutdown")
        script = layer.read(entry)
    assert entry.external_attr >> 16 & 0o111 == 0o111
    assert script == SHUTDOWN_EXTENSION.read_bytes()


def test_terraform_schedules_the_rollout_evaluator_with_its_own_policy(
    package: Path,
) -> None:
    resources = terraform(package)["resource"]
    evaluator = resources["aws_lambda_function"]["evaluate_rollouts"]
    assert (evaluator["memory_size"], evaluator["timeout"]) == (512, 120)
    [rule] = resources["aws_cloudwatch_event_rule"].values()
    assert rule["schedule_expression"] == "rate(1 minute)"
    [target] = resources["aws_cloudwatch_event_target"].values()
    assert target["arn"] == "${aws_lambda_function.evaluate_rollouts.arn}"
    policy = resources["aws_iam_role_policy"]["evaluate_rollouts_role"]["policy"]
    assert json.loads(policy) == load_policy(STAGE, "rollout")


def test_the_layer_keeps_the_service_models_the_functions_call(
    package: Path,
) -> None:
    with zipfile.ZipFile(package / "layer-deployment.zip") as layer:
        models = [
            name.split("botocore/data/", 1)[1]
            for name in layer.namelist()
            if "botocore/data/" in name
        ]
    services = {model.split("/")[0] for model in models if "/" in model}
    assert {"s3", "sqs", "cloudwatch"} <= services
    assert "ec2" not in services


def test_the_unzipped_package_evaluates_a_rollout_on_schedule(
    package: Path, iam_stack: IamStack, tmp_path: Path
) -> None:
    settings = iam_stack.settings
    aliases = AliasStore(
        Registry(iam_stack.admin, settings.model_bucket, max_model_bytes=1 << 20)
    )
    aliases.set_routing("iris", "rollout-artifact", {1: 100}, actor="artifact test")
    store = RolloutStore(aliases)
    operations.start(
        store,
        "iris",
        "rollout-artifact",
        2,
        Plan(steps=(50, 100), interval_seconds=60, timeout_seconds=600),
        actor="artifact test",
        now=utc_now() - timedelta(minutes=3),
    )
    tree = unpack(package, tmp_path / "lambda")
    event = {
        "version": "0",
        "id": "artifact-schedule",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-03-01T12:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/evaluate"],
        "detail": {},
    }

    answers = invoke(
        iam_stack, tree, "rollout", "app.evaluate_rollouts", [event], tmp_path
    )

    assert answers == [None]
    rollout, _ = store.read("iris", "rollout-artifact")
    # No traffic yet: the evaluation held, saying so, and left the alias alone.
    assert (rollout.state, rollout.evaluations) == ("holding", 1)
    assert rollout.reason.startswith("evidence is thin: 0 of the 200 requests")
    assert aliases.get("iris", "rollout-artifact").weights == {1: 50, 2: 50}
