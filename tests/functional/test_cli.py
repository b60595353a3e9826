"""The turnout command in-process (click's CliRunner) against moto."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner, Result

from chalicelib.aliases.document import Shadow
from chalicelib.aliases.store import AliasStore
from chalicelib.registry.versions import Registry
from tests.demo_support import MODEL_BUCKET, MODELS
from turnout.cli import main as cli_module
from turnout.cli.main import cli

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

Turnout = Callable[..., Result]
IRIS_V1 = str(MODELS / "iris-v1.onnx")
IRIS_V2 = str(MODELS / "iris-v2.onnx")


def invoke(*args: str, env: Mapping[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


@pytest.fixture
def turnout(s3: S3Client, monkeypatch: pytest.MonkeyPatch) -> Turnout:
    """``turnout(*args, env=None)``: run the command on the moto model bucket.

    The command shares the fixture's S3 client (building one takes a tenth of a
    second); the tests without this fixture cover the command's own client.
    """
    monkeypatch.setattr(cli_module, "s3_client", lambda endpoint_url: s3)

    def run(*args: str, env: Mapping[str, str | None] | None = None) -> Result:
        return invoke("--bucket", MODEL_BUCKET, *args, env=env)

    return run


def succeeded(result: Result) -> str:
    """The standard output of a command that must have worked."""
    assert (result.exit_code, result.stderr) == (0, ""), result.output
    return result.stdout


def as_json(result: Result) -> Any:
    return json.loads(succeeded(result))


def failed(result: Result, exit_code: int = 1) -> str:
    """The one line on stderr of a command that must have failed."""
    assert result.exit_code == exit_code, result.output
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n")
    return result.stderr


# -- registering and reading versions -------------------------------------------


def test_register_prints_the_new_version(turnout: Turnout) -> None:
    assert succeeded(turnout("register", "iris", IRIS_V1)) == (
        "registered iris version 1\n"
    )
    assert succeeded(turnout("register", "iris", IRIS_V2)) == (
        "registered iris version 2\n"
    )


def test_register_keeps_description_tags_and_labels(
    turnout: Turnout, registry: Registry
) -> None:
    printed = as_json(
        turnout(
            "--json",
            "register",
            "iris",
            IRIS_V1,
            "--description",
            "logistic regression",
            "--tag",
            "team=ml",
            "--tag",
            "stage=dev",
            "--labels",
            "a, b,c",
        )
    )
    manifest = registry.get_manifest("iris", 1)
    assert printed == manifest.to_dict()
    assert manifest.description == "logistic regression"
    assert manifest.tags == {"team": "ml", "stage": "dev"}
    assert manifest.labels == ("a", "b", "c")


def test_models_lists_versions_and_aliases(
    turnout: Turnout, demo_registry: Registry
) -> None:
    assert succeeded(turnout("models")) == (
        "MODEL     VERSIONS  LATEST  ALIASES\n"
        "diabetes  1         1       prod\n"
        "iris      2         2       prod\n"
    )
    assert as_json(turnout("--json", "models")) == [
        {"name": "diabetes", "versions": [1], "aliases": ["prod"]},
        {"name": "iris", "versions": [1, 2], "aliases": ["prod"]},
    ]


def test_models_in_an_empty_registry(turnout: Turnout) -> None:
    assert succeeded(turnout("models")) == "no models\n"
    assert as_json(turnout("--json", "models")) == []


def test_versions_lists_each_with_the_aliases_routing_to_it(
    turnout: Turnout, demo_registry: Registry, aliases: AliasStore
) -> None:
    aliases.set_routing("iris", "beta", {2: 1}, actor="tests")
    one = demo_registry.get_manifest("iris", 1)
    two = demo_registry.get_manifest("iris", 2)
    assert succeeded(turnout("versions", "iris")) == (
        f"VERSION  CREATED{' ' * 17}  SIZE   SHA256        DESCRIPTION  ALIASES\n"
        f"1        {one.created_at}  690    {one.sha256[:12]}  logistic     prod\n"
        f"2        {two.created_at}  37845  {two.sha256[:12]}  boosting     "
        "beta, prod\n"
    )
    assert as_json(turnout("--json", "versions", "iris")) == [
        {**one.to_dict(), "aliases": ["prod"]},
        {**two.to_dict(), "aliases": ["beta", "prod"]},
    ]


def test_describe_shows_a_version(turnout: Turnout, demo_registry: Registry) -> None:
    one = demo_registry.get_manifest("iris", 1)
    assert succeeded(turnout("describe", "iris", "1")) == (
        "iris version 1\n"
        "  description  logistic\n"
        f"  created      {one.created_at}\n"
        "  size         690 bytes\n"
        f"  sha256       {one.sha256}\n"
        "  producer     skl2onnx 1.20.0\n"
        "  opset        ai.onnx 17, ai.onnx.ml 1\n"
        "  ir version   8\n"
        "  tags         -\n"
        "  labels       setosa, versicolor, virginica\n"
        "inputs\n"
        "  NAME         DATATYPE  SHAPE\n"
        "  float_input  FP32      [-1, 4]\n"
        "outputs\n"
        "  NAME           DATATYPE  SHAPE\n"
        "  label          INT64     [-1]\n"
        "  probabilities  FP32      [-1, 3]\n"
    )
    assert as_json(turnout("--json", "describe", "iris", "1")) == one.to_dict()


def test_describe_without_a_version_shows_the_latest(
    turnout: Turnout, demo_registry: Registry
) -> None:
    assert succeeded(turnout("describe", "iris")).startswith("iris version 2\n")
    latest = demo_registry.get_manifest("iris", 2).to_dict()
    assert as_json(turnout("--json", "describe", "iris")) == latest


def test_delete_removes_an_unrouted_version(
    turnout: Turnout, demo_registry: Registry, s3: S3Client
) -> None:
    demo_registry.register("iris", (MODELS / "iris-v1.onnx").read_bytes())
    demo_registry.register("iris", (MODELS / "iris-v1.onnx").read_bytes())
    assert succeeded(turnout("delete", "iris", "3", "--actor", "ann")) == (
        "deleted iris version 3\n"
    )
    tombstone = s3.get_object(
        Bucket=MODEL_BUCKET, Key="models/iris/versions/3/deleted.json"
    )
    assert json.loads(tombstone["Body"].read())["actor"] == "ann"
    assert as_json(turnout("--json", "delete", "iris", "4")) == {
        "name": "iris",
        "version": 4,
        "deleted": True,
    }
    assert demo_registry.list_versions("iris") == [1, 2]
    assert succeeded(turnout("register", "iris", IRIS_V1)) == (
        "registered iris version 5\n"
    )


def test_delete_refuses_a_routed_version(
    turnout: Turnout, demo_registry: Registry
) -> None:
    assert failed(turnout("delete", "iris", "2")) == (
        "error: version 2 of 'iris' is routed to by alias prod: "
        "move the traffic away first\n"
    )
    assert demo_registry.list_versions("iris") == [1, 2]


# -- aliases ---------------------------------------------------------------------


def test_alias_set_routes_and_prints_the_alias(
    turnout: Turnout, demo_registry: Registry, aliases: AliasStore
) -> None:
    output = succeeded(
        turnout(
            "alias", "set", "iris", "canary", "1=75", "2=25",
            "--shadow", "2:5", "--reason", "try v2", "--actor", "ann",
        )
    )  # fmt: skip
    document = aliases.get("iris", "canary")
    assert (document.weights, document.current.actor) == ({1: 75, 2: 25}, "ann")
    assert output == (
        "iris@canary revision 1\n"
        f"  updated  {document.current.updated_at} by ann\n"
        "  reason   try v2\n"
        "  routing  1=75 2=25 (75% to version 1, 25% to version 2)\n"
        "  shadow   2:5 (version 2 gets a copy of 5% of the requests)\n"
        "  capture  nothing\n"
    )


def test_alias_set_as_json(
    turnout: Turnout, demo_registry: Registry, aliases: AliasStore
) -> None:
    printed = as_json(
        turnout("--json", "alias", "set", "iris", "prod", "2=1", "--actor", "bob")
    )
    document = aliases.get("iris", "prod")
    assert printed == document.to_dict()
    assert printed["revision"] == 2
    assert printed["weights"] == {"2": 1}
    assert printed["shadow"] is None
    history = aliases.history("iris", "prod")
    assert [revision.actor for revision in history] == ["tests", "bob"]


def test_the_actor_defaults_to_the_user(
    turnout: Turnout, demo_registry: Registry, aliases: AliasStore
) -> None:
    succeeded(turnout("alias", "set", "iris", "prod", "1=1", env={"LOGNAME": "carol"}))
    assert aliases.get("iris", "prod").current.actor == "carol"


def test_alias_set_with_an_expected_revision(
    turnout: Turnout, demo_registry: Registry
) -> None:
    assert failed(
        turnout("alias", "set", "iris", "prod", "2=1", "--expected-revision", "0")
    ) == (
        "error: alias iris@prod changed concurrently and is now at revision 1: "
        "read it again and retry\n"
    )
    landed = turnout(
        "--json", "alias", "set", "iris", "prod", "2=1", "--expected-revision", "1"
    )
    assert as_json(landed)["revision"] == 2


def test_alias_show(
    turnout: Turnout, demo_registry: Registry, aliases: AliasStore
) -> None:
    document = aliases.get("iris", "prod")
    assert succeeded(turnout("alias", "show", "iris", "prod")) == (
        "iris@prod revision 1\n"
        f"  updated  {document.current.updated_at} by tests\n"
        "  routing  1=90 2=10 (90% to version 1, 10% to version 2)\n"
        "  shadow   none\n"
        "  capture  nothing\n"
    )
    assert as_json(turnout("--json", "alias", "show", "iris", "prod")) == {
        "name": "iris",
        "alias": "prod",
        "revision": 1,
        "weights": {"1": 90, "2": 10},
        "shadow": None,
        "updated_at": document.current.updated_at,
        "actor": "tests",
        "reason": "",
        "revision_id": document.revision_id,
        "fence": 0,
    }


def test_alias_list(
    turnout: Turnout, demo_registry: Registry, aliases: AliasStore
) -> None:
    aliases.set_routing("iris", "beta", {2: 3, 1: 1.5}, actor="ann")
    aliases.set_routing("iris", "beta", {2: 1}, shadow=Shadow(1, 2.5), actor="bob")
    beta = aliases.get("iris", "beta")
    prod = aliases.get("iris", "prod")
    assert succeeded(turnout("alias", "list", "iris")) == (
        f"ALIAS  REVISION  ROUTING    SHADOW  CAPTURE  UPDATED{' ' * 17}  ACTOR\n"
        f"beta   2         2=1        1:2.5   -        {beta.current.updated_at}  bob\n"
        f"prod   1         1=90 2=10  -       -        {prod.current.updated_at}  "
        "tests\n"
    )
    assert as_json(turnout("--json", "alias", "list", "iris")) == [
        beta.to_dict(),
        prod.to_dict(),
    ]


def test_alias_list_of_a_model_without_aliases(
    turnout: Turnout, registry: Registry
) -> None:
    registry.register("iris", (MODELS / "iris-v1.onnx").read_bytes())
    assert succeeded(turnout("alias", "list", "iris")) == "iris has no aliases\n"
    assert as_json(turnout("--json", "alias", "list", "iris")) == []
    assert failed(turnout("alias", "list", "rose")) == (
        "error: model 'rose' not found; models: iris\n"
    )


def test_alias_history_rollback_and_promote(
    turnout: Turnout, demo_registry: Registry, aliases: AliasStore
) -> None:
    succeeded(
        turnout(
            "alias", "set", "iris", "prod", "1=50", "2=50", "--shadow", "1:10",
            "--actor", "ann", "--reason", "half and half",
        )
    )  # fmt: skip
    rolled_back = succeeded(
        turnout("alias", "rollback", "iris", "prod", "--actor", "bob")
    )
    promoted = as_json(
        turnout("--json", "promote", "iris", "prod", "2", "--actor", "cy")
    )
    again = as_json(
        turnout(
            "--json", "alias", "rollback", "iris", "prod", "--to", "2",
            "--actor", "dee", "--reason", "back to the split",
        )
    )  # fmt: skip
    document = aliases.get("iris", "prod")
    revisions = aliases.history("iris", "prod")
    times = [revision.updated_at for revision in revisions]
    assert rolled_back == (
        "iris@prod revision 3\n"
        f"  updated  {times[2]} by bob\n"
        "  reason   rollback to revision 1\n"
        "  routing  1=90 2=10 (90% to version 1, 10% to version 2)\n"
        "  shadow   none\n"
        "  capture  nothing\n"
    )
    assert (promoted["revision"], promoted["weights"]) == (4, {"2": 100})
    assert promoted["reason"] == "promote 2"
    assert again == document.to_dict()
    assert (again["revision"], again["weights"]) == (5, {"1": 50, "2": 50})
    assert again["shadow"] == {"version": 1, "percent": 10}
    assert succeeded(turnout("alias", "history", "iris", "prod")) == (
        f"REVISION  UPDATED{' ' * 17}  ACTOR  ROUTING    SHADOW  CAPTURE  REASON\n"
        f"1         {times[0]}  tests  1=90 2=10  -       -        -\n"
        f"2         {times[1]}  ann    1=50 2=50  1:10    -        half and half\n"
        f"3         {times[2]}  bob    1=90 2=10  -       -        rollback to "
        "revision 1\n"
        f"4         {times[3]}  cy     2=100      -       -        promote 2\n"
        f"5         {times[4]}  dee    1=50 2=50  1:10    -        back to the split\n"
    )
    history = as_json(turnout("--json", "alias", "history", "iris", "prod"))
    assert history == [revision.to_dict() for revision in revisions]


def test_promote_sends_all_traffic_to_one_version(
    turnout: Turnout, demo_registry: Registry, aliases: AliasStore
) -> None:
    output = succeeded(turnout("promote", "iris", "prod", "2", "--actor", "ann"))
    document = aliases.get("iris", "prod")
    assert output == (
        "iris@prod revision 2\n"
        f"  updated  {document.current.updated_at} by ann\n"
        "  reason   promote 2\n"
        "  routing  2=100 (100% to version 2)\n"
        "  shadow   none\n"
        "  capture  nothing\n"
    )


# -- errors: one line on stderr, never a traceback -------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["describe", "iris", "7"], "model 'iris' has no version 7; versions: 1, 2"),
        (["describe", "rose"], "model 'rose' not found; models: diabetes, iris"),
        (["versions", "rose"], "model 'rose' not found; models: diabetes, iris"),
        (["alias", "show", "iris", "beta"],
         "model 'iris' has no alias 'beta'; aliases: prod"),
        (["alias", "history", "iris", "beta"],
         "model 'iris' has no alias 'beta'; aliases: prod"),
        (["alias", "set", "iris", "prod", "1=-5", "2=10"],
         "invalid alias: weight of version 1 is negative"),
        (["alias", "set", "iris", "prod", "1=0", "2=0"],
         "invalid alias: the weights must have a positive sum"),
        (["alias", "set", "iris", "prod", "1=90", "3=10"],
         "model 'iris' has no version 3; versions: 1, 2"),
        (["alias", "set", "iris", "prod", "1=1", "--shadow", "2:0"],
         "invalid alias: shadow percentage 0 is not in (0, 100]"),
        (["alias", "set", "iris", "prod", "1=1", "--shadow", "9:5"],
         "model 'iris' has no version 9; versions: 1, 2"),
        (["alias", "set", "iris", "42", "1=1"],
         "invalid alias name '42': all digits, so it would read as a version number"),
        (["alias", "rollback", "iris", "prod"],
         "invalid alias: iris@prod has a single revision: nothing to roll back to"),
        (["alias", "rollback", "iris", "prod", "--to", "4"],
         "alias iris@prod has no revision 4"),
        (["promote", "iris", "prod", "3"],
         "model 'iris' has no version 3; versions: 1, 2"),
        (["register", "Iris", IRIS_V1],
         "invalid model name 'Iris': use lowercase letters, digits, '-', '_' and "
         "'.', starting with a letter or digit"),
        (["register", "iris", str(MODELS / "build.py")],
         "not a loadable ONNX model: [ONNXRuntimeError] : 7 : INVALID_PROTOBUF : "
         "Failed to load model because protobuf parsing failed."),
        (["register", "iris", IRIS_V1, "--labels", "a,b"],
         "invalid labels: 2 labels given, the model's 'probabilities' output has 3 "
         "classes"),
    ],
)  # fmt: skip
def test_refusals_are_one_line(
    turnout: Turnout,
    demo_registry: Registry,
    s3: S3Client,
    args: list[str],
    message: str,
) -> None:
    before = s3.list_objects_v2(Bucket=MODEL_BUCKET)["KeyCount"]
    assert failed(turnout(*args)) == f"error: {message}\n"
    assert failed(turnout("--json", *args)) == f"error: {message}\n"
    assert s3.list_objects_v2(Bucket=MODEL_BUCKET)["KeyCount"] == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["alias", "set", "iris", "prod", "1=x"],
         "Invalid value for 'VERSION=WEIGHT...': weight 'x' is not a number "
         "(see 'turnout alias set --help')"),
        (["alias", "set", "iris", "prod", "1:90"],
         "Invalid value for 'VERSION=WEIGHT...': '1:90' is not VERSION=WEIGHT "
         "(for example 1=90) (see 'turnout alias set --help')"),
        (["alias", "set", "iris", "prod", "1=50", "1=50"],
         "Invalid value for 'VERSION=WEIGHT...': version 1 is given more than once "
         "(see 'turnout alias set --help')"),
        (["alias", "set", "iris", "prod", "1=1", "--shadow", "5%"],
         "Invalid value for '--shadow': '5%' is not VERSION:PERCENT (for example "
         "3:5) (see 'turnout alias set --help')"),
        (["alias", "set", "iris", "prod"],
         "Missing argument 'VERSION=WEIGHT...'. (see 'turnout alias set --help')"),
        (["register", "iris", IRIS_V1, "--tag", "team"],
         "Invalid value for '--tag': 'team' is not KEY=VALUE (for example team=ml) "
         "(see 'turnout register --help')"),
        (["register", "iris", "/no/such/model.onnx"],
         "Invalid value for 'FILE': File '/no/such/model.onnx' does not exist. "
         "(see 'turnout register --help')"),
        (["describe", "iris", "latest"],
         "Invalid value for '[VERSION]': version 'latest' is not a positive integer "
         "(see 'turnout describe --help')"),
        (["delete", "iris", "0"],
         "Invalid value for 'VERSION': version '0' is not a positive integer "
         "(see 'turnout delete --help')"),
        (["alias", "rollback", "iris", "prod", "--to", "0"],
         "Invalid value for '--to': 0 is not in the range x>=1. "
         "(see 'turnout alias rollback --help')"),
        (["deploy"], "No such command 'deploy'. (see 'turnout --help')"),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    def no_s3(endpoint_url: str | None) -> S3Client:
        raise AssertionError("a usage error is found before any request")

    monkeypatch.setattr(cli_module, "s3_client", no_s3)
    result = invoke("--bucket", MODEL_BUCKET, *args)
    assert failed(result, exit_code=2) == f"error: {message}\n"


def test_a_file_over_the_size_limit_is_refused(turnout: Turnout, s3: S3Client) -> None:
    result = turnout(
        "register", "iris", IRIS_V1, env={"TURNOUT_MAX_MODEL_BYTES": "600"}
    )
    assert failed(result) == (
        "error: model file is 690 bytes, over the limit of 600 bytes "
        "(TURNOUT_MAX_MODEL_BYTES)\n"
    )
    assert s3.list_objects_v2(Bucket=MODEL_BUCKET)["KeyCount"] == 0


def test_a_bad_setting_is_one_line(turnout: Turnout) -> None:
    result = turnout("models", env={"TURNOUT_MAX_MODEL_BYTES": "lots"})
    assert failed(result) == (
        "error: TURNOUT_MAX_MODEL_BYTES='lots' is not a valid int\n"
    )


def test_the_bucket_comes_from_the_environment(s3: S3Client) -> None:
    result = invoke("models", env={"TURNOUT_MODEL_BUCKET": MODEL_BUCKET})
    assert succeeded(result) == "no models\n"


def test_a_missing_bucket_setting_is_one_line(s3: S3Client) -> None:
    result = invoke("models", env={"TURNOUT_MODEL_BUCKET": None})
    assert failed(result) == (
        "error: no bucket: pass --bucket or set TURNOUT_MODEL_BUCKET (for the dev "
        "stack: `source .dev.env` after `make dev`)\n"
    )


@pytest.mark.parametrize(
    "args",
    [
        ["batch", "status", "incoming/iris/a.csv"],
        ["batch", "list"],
        ["batch", "retry", "incoming/iris/a.csv"],
    ],
)
def test_a_missing_batch_bucket_says_which_variable_to_set(args: list[str]) -> None:
    result = invoke(*args, env={"TURNOUT_BATCH_BUCKET": None})
    assert failed(result) == (
        "error: no batch bucket: pass --batch-bucket or set TURNOUT_BATCH_BUCKET "
        "(for the dev stack: `source .dev.env` after `make dev`)\n"
    )


def test_a_bucket_that_does_not_exist_is_one_line(s3: S3Client) -> None:
    result = invoke("--bucket", "no-such-bucket", "models")
    assert failed(result) == (
        "error: bucket 'no-such-bucket' does not exist (NoSuchBucket)\n"
    )


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_endpoint_is_one_line() -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    result = invoke(
        "--endpoint-url", endpoint, "--bucket", MODEL_BUCKET, "describe", "iris", "1"
    )
    assert failed(result) == (
        f'error: Could not connect to the endpoint URL: "{endpoint}/{MODEL_BUCKET}'
        '/models/iris/versions/1/manifest.json": is the dev stack running (`make '
        "dev`)? Else check --endpoint-url and AWS_ENDPOINT_URL\n"
    )


def test_an_unexpected_failure_is_still_one_line(
    turnout: Turnout, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Registry) -> list[str]:
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(Registry, "list_models", broken)
    assert failed(turnout("models")) == (
        "error: unexpected RuntimeError: disk on fire second line\n"
    )


def test_help_is_not_an_error(turnout: Turnout) -> None:
    output = succeeded(turnout("alias", "set", "--help"))
    assert output.startswith(
        "Usage: turnout alias set [OPTIONS] NAME ALIAS VERSION=WEIGHT...\n"
    )


def test_missing_credentials_say_how_to_give_them(tmp_path: Path) -> None:
    result = invoke(
        "--bucket",
        MODEL_BUCKET,
        "models",
        env={
            "AWS_ACCESS_KEY_ID": None,
            "AWS_SECRET_ACCESS_KEY": None,
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_EC2_METADATA_DISABLED": "true",
        },
    )
    assert failed(result) == (
        "error: no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY (against `make dev`, any values work, e.g. "
        "testing/testing)\n"
    )
