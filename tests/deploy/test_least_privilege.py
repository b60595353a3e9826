"""Each function's policy from ``.chalice/``, proven against a moto server that
enforces IAM: the app's own code on its real REST and batch paths, with the keys
of an IAM user holding exactly that policy, and the refusals each must make."""

from __future__ import annotations

import gzip
import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

import pytest
from botocore.exceptions import ClientError
from chalice.test import Client

from chalicelib import wiring
from chalicelib.aliases.document import Capture
from chalicelib.aliases.store import AliasStore
from chalicelib.batch.fanout import plan as shard_rules
from chalicelib.clock import utc_now
from chalicelib.registry.versions import Registry
from chalicelib.rollout import operations, runner
from chalicelib.rollout.plan import Plan
from chalicelib.rollout.store import RolloutStore
from tests.deploy.iam_support import PART_BYTES, STAGE, AppAs, IamStack, load_policy
from tests.functional.batch_support import csv_text, expected_csv, iris_rows
from tools.devstack.stage import stage_settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SETOSA, VIRGINICA = [5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]
LOG_ACTIONS = ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents")


def log_grants(function_name: str) -> set[tuple[str, str]]:
    group = f"arn:aws:logs:*:*:log-group:/aws/lambda/{function_name}"
    return {(action, arn) for action in LOG_ACTIONS for arn in (group, group + ":*")}


def expected_grants(stage: str, function: str) -> set[tuple[str, str]]:
    """Every (action, resource) a function's policy may grant, and why, on the
    stage's buckets as ``.chalice/config.json`` names them."""
    settings = stage_settings(stage)
    models = f"arn:aws:s3:::{settings.model_bucket}"
    batch = f"arn:aws:s3:::{settings.batch_bucket}"
    queue = f"arn:aws:sqs:*:*:{settings.batch_shard_queue}"
    if function == "rollout":
        return {
            # Alias heads and revisions, manifests, rollout documents, decisions.
            ("s3:GetObject", f"{models}/models/*"),
            # Listing models, versions (is one deleted?), aliases and decisions.
            ("s3:ListBucket", models),
            # Writing only under aliases/: heads, revisions, the rollout
            # document and its decision records (never a version).
            ("s3:PutObject", f"{models}/models/*/aliases/*"),
            # The per-version metrics (GetMetricData has no resource-level ARN).
            ("cloudwatch:GetMetricData", "*"),
        } | log_grants(f"turnout-{stage}-evaluate_rollouts")
    if function == "api":
        return {
            # Aliases, manifests and model files (and, later, tombstones).
            ("s3:GetObject", f"{models}/models/*"),
            # Listing versions and aliases; a missing key is then a 404, not a 403.
            ("s3:ListBucket", models),
            # Data capture: the sampled requests of aliases that capture, written
            # once (never read, listed or overwritten by the function).
            ("s3:PutObject", f"arn:aws:s3:::{settings.capture_bucket}/capture/*"),
            # Ground truth: labels posted to /models/{name}/feedback, written once.
            ("s3:PutObject", f"arn:aws:s3:::{settings.capture_bucket}/feedback/*"),
        } | log_grants(f"turnout-{stage}")
    if function == "feedback":
        return {
            # A labels file uploaded under feedback/, its errors report next to
            # the batch errors reports, and its labels filed like posted ones.
            ("s3:GetObject", f"{batch}/feedback/*"),
            ("s3:PutObject", f"{batch}/outgoing/feedback/*"),
            ("s3:PutObject", f"arn:aws:s3:::{settings.capture_bucket}/feedback/*"),
        } | log_grants(f"turnout-{stage}-handle_feedback_upload")
    batch_work = {
        ("s3:GetObject", f"{models}/models/*"),
        ("s3:ListBucket", models),
        # The uploaded file (whole, or a shard's byte range).
        ("s3:GetObject", f"{batch}/incoming/*"),
        # A missing manifest (the job's lease) reads as NoSuchKey, not a 403.
        ("s3:ListBucket", batch),
        # The manifest (the lease: read, then written with If-Match), the output
        # (put, or the parts of a multipart upload), the errors report; deleting
        # and aborting what a failed or superseded job left behind.
        ("s3:GetObject", f"{batch}/outgoing/*"),
        ("s3:PutObject", f"{batch}/outgoing/*"),
        ("s3:DeleteObject", f"{batch}/outgoing/*"),
        ("s3:AbortMultipartUpload", f"{batch}/outgoing/*"),
        # Finding an interrupted job's unfinished multipart uploads to abort them.
        ("s3:ListBucketMultipartUploads", batch),
        # (A fanned-out run's shards, done markers and assembly live under
        # outgoing/ too: UploadPartCopy reads them with GetObject and writes the
        # output with PutObject.)
    }
    if function == "batch":
        return (
            batch_work
            # Sending a large file's shards to the shard function's queue.
            | {("sqs:GetQueueUrl", queue), ("sqs:SendMessage", queue)}
            | log_grants(f"turnout-{stage}-handle_batch_upload")
        )
    return (
        batch_work
        # What Lambda's SQS event source polls with, under the function's role.
        | {
            ("sqs:ReceiveMessage", queue),
            ("sqs:DeleteMessage", queue),
            ("sqs:GetQueueAttributes", queue),
        }
        | log_grants(f"turnout-{stage}-handle_batch_shard")
    )


def grants(policy: dict[str, Any]) -> set[tuple[str, str]]:
    granted = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource"}, statement
        for action in statement["Action"]:
            for resource in statement["Resource"]:
                granted.add((action, resource))
    return granted


@pytest.mark.parametrize("stage", ["dev", "prod"])
@pytest.mark.parametrize("function", ["api", "batch", "shard", "feedback", "rollout"])
def test_each_policy_grants_exactly_what_its_function_needs(
    stage: str, function: str
) -> None:
    assert grants(load_policy(stage, function)) == expected_grants(stage, function)


def test_every_function_of_every_stage_has_its_own_policy_file() -> None:
    from tests.demo_support import ROOT

    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    assert config["autogen_policy"] is False
    for stage in ("dev", "prod"):
        functions = config["stages"][stage]["lambda_functions"]
        assert functions["api_handler"]["iam_policy_file"] == f"policy-{stage}-api.json"
        assert (
            functions["handle_batch_upload"]["iam_policy_file"]
            == f"policy-{stage}-batch.json"
        )
        assert (
            functions["handle_batch_shard"]["iam_policy_file"]
            == f"policy-{stage}-shard.json"
        )
        assert (
            functions["handle_feedback_upload"]["iam_policy_file"]
            == f"policy-{stage}-feedback.json"
        )
        assert (
            functions["evaluate_rollouts"]["iam_policy_file"]
            == f"policy-{stage}-rollout.json"
        )


# -- the REST path with the API function's policy --------------------------------


def v2_infer(client: Client, alias: str) -> Any:
    body = {
        "inputs": [
            {
                "name": "float_input",
                "shape": [2, 4],
                "datatype": "FP32",
                "data": SETOSA + VIRGINICA,
            }
        ]
    }
    return client.http.post(
        "/v2/models/iris/infer",
        headers={"Content-Type": "application/json", "X-Turnout-Alias": alias},
        body=json.dumps(body),
    )


def test_the_api_policy_serves_health_metadata_and_a_prediction_through_an_alias(
    iam_stack: IamStack, app_as: AppAs
) -> None:
    with app_as(iam_stack.credentials["api"]) as client:
        live = client.http.get("/v2/health/live")
        metadata = client.http.get("/v2/models/iris")
        infer = v2_infer(client, "staging")

    assert (live.status_code, live.json_body) == (200, {"live": True})
    assert metadata.status_code == 200, metadata.body
    assert metadata.json_body["versions"] == ["1", "2"]
    assert infer.status_code == 200, infer.body
    assert infer.headers["X-Model-Version"] == "2"
    assert infer.json_body["outputs"][0] == {
        "name": "label",
        "datatype": "INT64",
        "shape": [2],
        "data": [0, 2],
    }


def test_a_policy_missing_an_action_the_code_needs_fails_the_prediction(
    iam_stack: IamStack, app_as: AppAs
) -> None:
    policy = load_policy(STAGE, "api")
    policy["Statement"] = [s for s in policy["Statement"] if s["Sid"] != "ReadModels"]
    keys = iam_stack.create_user("turnout-dev-api-without-reads", policy)

    with app_as(keys) as client:
        infer = v2_infer(client, "staging")

    assert (infer.status_code, infer.json_body) == (
        500,
        {"error": "internal error"},
    )


def test_the_api_policy_refuses_writing_models_and_reading_batch_files(
    iam_stack: IamStack,
) -> None:
    s3: S3Client = iam_stack.client("s3", iam_stack.credentials["api"])
    settings = iam_stack.settings

    for call in (
        lambda: s3.put_object(
            Bucket=settings.model_bucket, Key="models/iris/aliases/prod", Body=b"{}"
        ),
        lambda: s3.delete_object(
            Bucket=settings.model_bucket, Key="models/iris/versions/1/model.onnx"
        ),
        lambda: s3.list_objects_v2(Bucket=settings.batch_bucket),
    ):
        with pytest.raises(ClientError) as refused:
            call()
        assert refused.value.response["Error"]["Code"] == "AccessDenied"


def test_the_api_policy_writes_captured_requests_and_nothing_else_there(
    iam_stack: IamStack, app_as: AppAs
) -> None:
    settings = iam_stack.settings
    aliases = AliasStore(Registry(iam_stack.admin, settings.model_bucket))
    aliases.set_routing("iris", "captured", {1: 100}, actor="iam test")
    aliases.set_capture("iris", "captured", Capture(100), actor="iam test")

    with app_as(iam_stack.credentials["api"]) as client:
        infer = v2_infer(client, "captured")
    assert infer.status_code == 200, infer.body

    listed = iam_stack.admin.list_objects_v2(
        Bucket=settings.capture_bucket, Prefix="capture/iris/captured/"
    )
    # The records and, written with the same grant, their summary.
    stored, summary = sorted(listed["Contents"], key=lambda item: item["Key"])
    assert summary["Key"] == stored["Key"] + ".summary.json"
    body = iam_stack.admin.get_object(Bucket=settings.capture_bucket, Key=stored["Key"])
    (record,) = gzip.decompress(body["Body"].read()).decode().splitlines()
    assert json.loads(record)["request_id"] == infer.headers["X-Request-Id"]

    s3: S3Client = iam_stack.client("s3", iam_stack.credentials["api"])
    for call in (
        lambda: s3.put_object(Bucket=settings.capture_bucket, Key="other", Body=b"x"),
        lambda: s3.get_object(Bucket=settings.capture_bucket, Key=stored["Key"]),
        lambda: s3.list_objects_v2(Bucket=settings.capture_bucket),
    ):
        with pytest.raises(ClientError) as refused:
            call()
        assert refused.value.response["Error"]["Code"] == "AccessDenied"


def test_the_api_policy_files_posted_labels_and_nothing_else_there(
    iam_stack: IamStack, app_as: AppAs
) -> None:
    settings = iam_stack.settings
    with app_as(iam_stack.credentials["api"]) as client:
        answer = client.http.post(
            "/models/iris/feedback",
            headers={"Content-Type": "application/json"},
            body=json.dumps({"feedback": [{"id": "r-1", "label": 2}]}),
        )
        wiring.container().flush_evidence()
    assert (answer.status_code, answer.json_body) == (200, {"accepted": 1})

    listed = iam_stack.admin.list_objects_v2(
        Bucket=settings.capture_bucket, Prefix="feedback/iris/"
    )
    (stored,) = listed["Contents"]  # labels have no summary
    body = iam_stack.admin.get_object(Bucket=settings.capture_bucket, Key=stored["Key"])
    (record,) = gzip.decompress(body["Body"].read()).decode().splitlines()
    assert (json.loads(record)["id"], json.loads(record)["label"]) == ("r-1", 2)

    s3: S3Client = iam_stack.client("s3", iam_stack.credentials["api"])
    for call in (
        lambda: s3.put_object(Bucket=settings.capture_bucket, Key="labels", Body=b"x"),
        lambda: s3.get_object(Bucket=settings.capture_bucket, Key=stored["Key"]),
        lambda: s3.put_object(
            Bucket=settings.batch_bucket, Key="feedback/iris/x.csv", Body=b"x"
        ),
    ):
        with pytest.raises(ClientError) as refused:
            call()
        assert refused.value.response["Error"]["Code"] == "AccessDenied"


def test_the_feedback_policy_files_a_labels_file_and_reports_its_bad_rows(
    iam_stack: IamStack, app_as: AppAs
) -> None:
    settings = iam_stack.settings
    key = "feedback/iris/iam labels.csv"
    iam_stack.admin.put_object(
        Bucket=settings.batch_bucket, Key=key, Body=b"id,label\nr-1,0\n,1\n"
    )
    with app_as(iam_stack.credentials["feedback"]) as client:
        event = client.events.generate_s3_event(
            bucket=settings.batch_bucket, key=quote_plus(key, safe="/")
        )
        result = client.lambda_.invoke("handle_feedback_upload", event).payload
    assert (result["labels"], result["rejected"]) == (1, 1)
    report = iam_stack.admin.get_object(
        Bucket=settings.batch_bucket, Key=result["errors"]
    )
    assert json.loads(report["Body"].read())["reason"] == "id: empty"
    listed = iam_stack.admin.list_objects_v2(
        Bucket=settings.capture_bucket, Prefix="feedback/iris/"
    )
    assert len(listed["Contents"]) >= 1

    s3: S3Client = iam_stack.client("s3", iam_stack.credentials["feedback"])
    capture, batch = settings.capture_bucket, settings.batch_bucket
    for call in (
        lambda: s3.get_object(Bucket=batch, Key="incoming/x.csv"),
        lambda: s3.put_object(Bucket=capture, Key="capture/x", Body=b""),
        lambda: s3.put_object(Bucket=batch, Key="feedback/x", Body=b""),
    ):
        with pytest.raises(ClientError) as refused:
            call()
        assert refused.value.response["Error"]["Code"] == "AccessDenied"


# -- the batch path with the batch function's policy -----------------------------


def test_the_batch_policy_predicts_a_file_end_to_end_through_multipart_output(
    iam_stack: IamStack, app_as: AppAs
) -> None:
    settings = iam_stack.settings
    rows = iris_rows(3_000)
    key = "incoming/iris@1/iam.csv"
    iam_stack.admin.put_object(
        Bucket=settings.batch_bucket,
        Key=key,
        Body=(csv_text(rows) + "5.1,abc,1.4,0.2,bad\n").encode(),
    )

    with app_as(iam_stack.credentials["batch"]) as client:
        event = client.events.generate_s3_event(
            bucket=settings.batch_bucket, key=quote_plus(key, safe="/")
        )
        payload = client.lambda_.invoke("handle_batch_upload", event).payload

    def read(name: str) -> bytes:
        body = iam_stack.admin.get_object(Bucket=settings.batch_bucket, Key=name)
        data: bytes = body["Body"].read()
        return data

    manifest = json.loads(read("outgoing/iris@1/iam.csv.manifest.json"))
    assert payload == {"action": "processed", "manifest": manifest}
    assert manifest["status"] == "partial"
    assert manifest["rows"] == {"read": 3_001, "predicted": 3_000, "rejected": 1}
    output = read("outgoing/iris@1/iam.csv.out").decode()
    # Bigger than a part: the output went up as a multipart upload.
    assert len(output) > 2 * PART_BYTES
    assert output == expected_csv(1, rows)
    errors = read(manifest["errors"]["key"]).splitlines()
    assert [json.loads(line)["raw"] for line in errors] == ["5.1,abc,1.4,0.2,bad"]


def test_the_batch_and_shard_policies_fan_a_file_out_and_assemble_it_in_s3(
    iam_stack: IamStack, app_as: AppAs, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = iam_stack.settings
    # Shard outputs over the (scaled down) part minimum: UploadPartCopy runs.
    monkeypatch.setattr(shard_rules, "MIN_PART_BYTES", PART_BYTES)
    rows = iris_rows(12_000)
    key = "incoming/iris@2/iam-fanned.csv"
    iam_stack.admin.put_object(
        Bucket=settings.batch_bucket, Key=key, Body=csv_text(rows).encode()
    )
    changes = {"batch_shard_bytes": PART_BYTES, "model_cache_dir": "/tmp/turnout-iam"}

    with app_as(iam_stack.credentials["batch"], **changes) as client:
        event = client.events.generate_s3_event(
            bucket=settings.batch_bucket, key=quote_plus(key, safe="/")
        )
        handed = client.lambda_.invoke("handle_batch_upload", event).payload
    sqs = iam_stack.client("sqs", iam_stack.credentials["shard"])
    with app_as(iam_stack.credentials["shard"], **changes) as client:
        while messages := sqs.receive_message(
            QueueUrl=iam_stack.shard_queue_url,
            MaxNumberOfMessages=10,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        ).get("Messages", []):
            for message in messages:
                event = client.events.generate_sqs_event(
                    [message["Body"]], settings.batch_shard_queue
                )
                client.lambda_.invoke("handle_batch_shard", event)
                sqs.delete_message(
                    QueueUrl=iam_stack.shard_queue_url,
                    ReceiptHandle=message["ReceiptHandle"],
                )

    body = iam_stack.admin.get_object(
        Bucket=settings.batch_bucket, Key="outgoing/iris@2/iam-fanned.csv.manifest.json"
    )
    manifest = json.loads(body["Body"].read())
    output = iam_stack.admin.get_object(
        Bucket=settings.batch_bucket, Key="outgoing/iris@2/iam-fanned.csv.out"
    )
    assert handed["action"] == "fanned_out"
    assert manifest["status"] == "succeeded"
    assert len(manifest["shards"]) == handed["manifest"]["progress"]["shards"] > 2
    # iris v2's trees predict each row alone: the same bytes whatever the batch.
    assert output["Body"].read().decode() == expected_csv(2, rows)
    assert int(output["ETag"].strip('"').split("-")[1]) >= 2


def test_the_batch_policy_refuses_writing_uploads_and_models(
    iam_stack: IamStack,
) -> None:
    s3: S3Client = iam_stack.client("s3", iam_stack.credentials["batch"])
    settings = iam_stack.settings

    for call in (
        lambda: s3.put_object(
            Bucket=settings.batch_bucket, Key="incoming/iris/forged.csv", Body=b"x"
        ),
        lambda: s3.delete_object(
            Bucket=settings.batch_bucket, Key="incoming/iris@1/iam.csv"
        ),
        lambda: s3.put_object(
            Bucket=settings.model_bucket, Key="models/iris/aliases/prod", Body=b"{}"
        ),
    ):
        with pytest.raises(ClientError) as refused:
            call()
        assert refused.value.response["Error"]["Code"] == "AccessDenied"


# -- the scheduled rollout evaluator with its own policy -------------------------


def test_the_rollout_policy_evaluates_a_rollout_from_its_metrics(
    iam_stack: IamStack, app_as: AppAs
) -> None:
    settings = iam_stack.settings
    aliases = AliasStore(
        Registry(iam_stack.admin, settings.model_bucket, max_model_bytes=1 << 20)
    )
    aliases.set_routing("iris", "rollout-iam", {1: 100}, actor="iam test")
    store = RolloutStore(aliases)
    started = utc_now() - timedelta(minutes=3)
    operations.start(
        store,
        "iris",
        "rollout-iam",
        2,
        Plan(steps=(50, 100), interval_seconds=60, timeout_seconds=600),
        actor="iam test",
        now=started,
    )
    cloudwatch = iam_stack.client("cloudwatch", iam_stack.admin_keys)
    for version in (1, 2):
        dimensions = [
            {"Name": "Model", "Value": "iris"},
            {"Name": "Alias", "Value": "rollout-iam"},
            {"Name": "Version", "Value": str(version)},
        ]
        at = started + timedelta(minutes=1)
        cloudwatch.put_metric_data(
            Namespace="Turnout",
            MetricData=[
                {
                    "MetricName": name,
                    "Dimensions": dimensions,
                    "Value": value,
                    "Timestamp": at,
                }
                for name, value in (
                    ("Requests", 300),
                    ("ServerErrors", 0),
                    ("Latency", 12.0),
                )
            ],
        )

    runner.default_runtime.cache_clear()
    with app_as(iam_stack.credentials["rollout"]) as client:
        client.lambda_.invoke(
            "evaluate_rollouts",
            client.events.generate_cw_event(
                source="aws.events",
                detail_type="Scheduled Event",
                detail={},
                resources=["arn:aws:events:us-east-1:123456789012:rule/evaluate"],
            ),
        )
    runner.default_runtime.cache_clear()

    rollout, _ = store.read("iris", "rollout-iam")
    assert (rollout.state, rollout.evaluations) == ("completed", 1)
    assert aliases.get("iris", "rollout-iam").weights == {2: 100}
    (record,) = store.decisions(rollout)
    assert record["action"] == "advance"


def test_the_rollout_policy_refuses_writing_versions_and_reading_batch_files(
    iam_stack: IamStack,
) -> None:
    s3: S3Client = iam_stack.client("s3", iam_stack.credentials["rollout"])
    settings = iam_stack.settings

    for call in (
        lambda: s3.put_object(
            Bucket=settings.model_bucket,
            Key="models/iris/versions/9/manifest.json",
            Body=b"{}",
        ),
        lambda: s3.delete_object(
            Bucket=settings.model_bucket, Key="models/iris/aliases/prod.json"
        ),
        lambda: s3.list_objects_v2(Bucket=settings.batch_bucket),
    ):
        with pytest.raises(ClientError) as refused:
            call()
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
