"""Data capture: the setting in the alias history, the CLI, and captured
requests read back from S3 and matched to the requests that made them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from chalice.test import Client, HTTPResponse
from click.testing import CliRunner, Result

from chalicelib import wiring
from chalicelib.aliases.document import Capture, Shadow
from chalicelib.aliases.store import AliasStore
from chalicelib.capture import read_capture
from chalicelib.errors import AliasNotFoundError, InvalidAliasError
from tests.demo_support import MODEL_BUCKET
from tests.emf_support import emf_lines
from tests.functional.rest_support import (
    IRIS_ROWS,
    FakeClock,
    post_json,
    serving_client,
    v2_request,
)
from turnout.cli import main as cli_module

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CAPTURE_BUCKET = "turnout-capture-dev"


# -- the setting ---------------------------------------------------------------


def test_a_capture_setting_is_a_revision_in_the_alias_history(
    demo_registry: object, aliases: AliasStore
) -> None:
    aliases.set_capture("iris", "prod", Capture(10), actor="ann", reason="drift")
    changed = aliases.set_routing("iris", "prod", {1: 50, 2: 50}, actor="bob")
    # Routing changes keep what is captured.
    assert changed.capture == Capture(10, ("inputs", "outputs"))
    rolled_back = aliases.rollback("iris", "prod", actor="cy")
    assert (rolled_back.weights, rolled_back.capture) == ({1: 90, 2: 10}, Capture(10))
    aliases.set_capture("iris", "prod", None, actor="dee")
    history = aliases.history("iris", "prod")
    assert [(r.revision, r.actor, r.reason, r.capture) for r in history] == [
        (1, "tests", "", None),
        (2, "ann", "drift", Capture(10)),
        (3, "bob", "", Capture(10)),
        (4, "cy", "rollback to revision 2", Capture(10)),
        (5, "dee", "capture off", None),
    ]
    assert history[1].to_dict()["capture"] == {
        "percent": 10,
        "keep": ["inputs", "outputs"],
    }


@pytest.mark.parametrize(
    ("capture", "message"),
    [
        (Capture(0), "capture percentage 0 is not in (0, 100]"),
        (Capture(100.5), "capture percentage 100.5 is not in (0, 100]"),
        (
            Capture(5, ("labels",)),
            "capture keeps inputs, outputs (one or both), not labels",
        ),
        (Capture(5, ()), "capture keeps inputs, outputs (one or both), not nothing"),
    ],
)
def test_a_bad_capture_setting_is_refused(
    demo_registry: object, aliases: AliasStore, capture: Capture, message: str
) -> None:
    with pytest.raises(InvalidAliasError) as raised:
        aliases.set_capture("iris", "prod", capture, actor="ann")
    assert raised.value.message == f"invalid alias: {message}"
    assert aliases.get("iris", "prod").revision == 1


def test_capturing_an_alias_that_does_not_exist_is_refused(
    demo_registry: object, aliases: AliasStore
) -> None:
    with pytest.raises(AliasNotFoundError):
        aliases.set_capture("iris", "staging", Capture(5), actor="ann")


def cli(s3: S3Client, monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    monkeypatch.setattr(cli_module, "s3_client", lambda endpoint_url: s3)
    return CliRunner().invoke(cli_module.cli, ["--bucket", MODEL_BUCKET, *args])


def test_the_capture_commands_set_show_and_turn_off(
    demo_registry: object, s3: S3Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = cli(s3, monkeypatch, "capture", "show", "iris", "prod")
    assert shown.stdout == "iris@prod revision 1 captures nothing\n"
    set_ = cli(
        s3, monkeypatch, "capture", "set", "iris", "prod", "10", "--keep", "outputs"
    )
    assert set_.stdout == (
        "iris@prod revision 2 captures 10% of the requests, keeping outputs\n"
    )
    shown = cli(s3, monkeypatch, "--json", "capture", "show", "iris", "prod")
    assert json.loads(shown.stdout) == {
        "name": "iris",
        "alias": "prod",
        "revision": 2,
        "capture": {"percent": 10, "keep": ["outputs"]},
    }
    off = cli(s3, monkeypatch, "capture", "off", "iris", "prod")
    assert off.stdout == "iris@prod revision 3 captures nothing\n"
    refused = cli(
        s3, monkeypatch, "capture", "set", "iris", "prod", "10", "--keep", "x"
    )
    assert refused.exit_code == 2
    assert "--keep takes inputs and/or outputs, not 'x'" in refused.stderr


@pytest.mark.parametrize("percent", ["0", "150"])
def test_a_bad_capture_percentage_names_the_field(
    demo_registry: object, s3: S3Client, monkeypatch: pytest.MonkeyPatch, percent: str
) -> None:
    refused = cli(s3, monkeypatch, "capture", "set", "iris", "prod", percent)
    assert refused.exit_code == 2
    assert refused.stderr.startswith(
        f"error: Invalid value for 'PERCENT': capture percentage '{percent}' is not "
        "in (0, 100]"
    )
    assert "invalid alias" not in refused.stderr


def test_alias_show_and_history_show_the_capture_setting(
    demo_registry: object, s3: S3Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli(s3, monkeypatch, "capture", "set", "iris", "prod", "10", "--keep", "outputs")
    shown = cli(s3, monkeypatch, "alias", "show", "iris", "prod").stdout.splitlines()
    history = cli(s3, monkeypatch, "alias", "history", "iris", "prod").stdout
    assert shown[-1] == "  capture  10% of the requests, keeping outputs"
    # REVISION UPDATED ACTOR 1=90 2=10 SHADOW CAPTURE REASON
    assert [line.split()[6] for line in history.splitlines()[1:]] == ["-", "10%"]


# -- serving ---------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(
    request: pytest.FixtureRequest, s3: S3Client, clock: FakeClock
) -> Iterator[Client]:
    s3.create_bucket(Bucket=CAPTURE_BUCKET)
    yield from serving_client(
        request,
        clock,
        capture_bucket=CAPTURE_BUCKET,
        capture_flush_records=3,
        capture_flush_seconds=60.0,
    )


def captured(s3: S3Client) -> dict[str, list[dict[str, Any]]]:
    """Every capture object's records, by key, once the work after the answers
    is done."""
    wiring.container().wait_for_background_work()
    listing = s3.list_objects_v2(Bucket=CAPTURE_BUCKET).get("Contents", [])
    return {
        item["Key"]: [
            dict(record)
            for record in read_capture(
                s3.get_object(Bucket=CAPTURE_BUCKET, Key=item["Key"])["Body"].read()
            )
        ]
        for item in listing
        if item["Key"].endswith(".jsonl.gz")
    }


def predict(client: Client, rows: list[list[float]]) -> HTTPResponse:
    response = post_json(
        client,
        "/v2/models/iris/infer",
        v2_request(rows),
        headers={"X-Routing-Key": "user-7"},
    )
    assert response.status_code == 200
    return response


def test_captured_requests_are_read_back_and_match_the_requests(
    client: Client, aliases: AliasStore, s3: S3Client
) -> None:
    aliases.set_routing("iris", "prod", {2: 100}, actor="tests")
    aliases.set_capture("iris", "prod", Capture(100), actor="tests")
    sent = [IRIS_ROWS, IRIS_ROWS[1:], IRIS_ROWS[:1]]
    responses = [predict(client, rows) for rows in sent]
    ((key, records),) = captured(s3).items()
    day = records[0]["time"][:10]
    hour = records[0]["time"][:13].replace("-", "/").replace("T", "/")
    assert key.startswith(f"capture/iris/prod/{hour}/")
    assert key.endswith(".jsonl.gz")
    for rows, response, record in zip(sent, responses, records, strict=True):
        outputs = {o["name"]: o["data"] for o in response.json_body["outputs"]}
        assert record.pop("latency_ms") > 0
        assert record.pop("time").startswith(day)
        assert record == {
            "request_id": response.headers["X-Request-Id"],
            "caller_id": None,
            "model": "iris",
            "version": 2,
            "alias": "prod",
            "routing_key_hash": hashlib.sha256(b"user-7").hexdigest()[:16],
            "inputs": {"float_input": np.array(rows, dtype=np.float32).tolist()},
            "outputs": {
                "label": outputs["label"],
                "probabilities": np.reshape(
                    outputs["probabilities"], (len(rows), 3)
                ).tolist(),
            },
        }


def test_a_container_loses_at_most_its_unwritten_buffer(
    client: Client, aliases: AliasStore, s3: S3Client
) -> None:
    """The loss bound: requests are written in threes here (flush_records=3); a
    container reclaimed with two in its buffer loses those two, and no more."""
    aliases.set_capture("iris", "prod", Capture(100), actor="tests")
    first = [predict(client, IRIS_ROWS) for _ in range(5)]
    written = captured(s3)
    assert [len(records) for records in written.values()] == [3]
    (records,) = written.values()
    assert [r["request_id"] for r in records] == [
        r.headers["X-Request-Id"] for r in first[:3]
    ]
    # What a reclaimed container would lose: the two requests since its flush.
    capture = wiring.container().capture
    assert capture is not None and capture.buffered == 2


def test_an_old_buffer_is_written_when_the_next_request_comes(
    client: Client, aliases: AliasStore, s3: S3Client, clock: FakeClock
) -> None:
    aliases.set_capture("iris", "prod", Capture(100), actor="tests")
    predict(client, IRIS_ROWS)
    assert captured(s3) == {}
    clock.advance(60.0)
    predict(client, IRIS_ROWS)
    assert [len(records) for records in captured(s3).values()] == [2]


def test_outputs_only_capture_keeps_no_inputs(
    client: Client, aliases: AliasStore, s3: S3Client
) -> None:
    aliases.set_capture("iris", "prod", Capture(100, ("outputs",)), actor="tests")
    for _ in range(3):
        predict(client, IRIS_ROWS)
    (records,) = captured(s3).values()
    assert all("inputs" not in record and "outputs" in record for record in records)


def test_refusals_and_uncaptured_aliases_write_nothing(
    client: Client, aliases: AliasStore, s3: S3Client
) -> None:
    aliases.set_routing("iris", "canary", {2: 100}, actor="tests")
    aliases.set_capture("iris", "canary", Capture(100), actor="tests")
    for _ in range(3):
        predict(client, IRIS_ROWS)  # prod: no capture setting
        refused = post_json(
            client,
            "/models/iris/predict?alias=canary",
            {"instances": [[1.0, 2.0]]},
        )
        assert refused.status_code == 400
    assert captured(s3) == {}


def test_a_capture_write_s3_refuses_is_logged_and_counted_never_failing_a_request(
    client: Client,
    aliases: AliasStore,
    s3: S3Client,
    capsys: pytest.CaptureFixture[str],
) -> None:
    aliases.set_capture("iris", "prod", Capture(100), actor="tests")
    s3.delete_bucket(Bucket=CAPTURE_BUCKET)
    capsys.readouterr()
    for _ in range(3):
        predict(client, IRIS_ROWS)
    wiring.container().wait_for_background_work()
    failures = [
        line for line in emf_lines(capsys.readouterr().out)
        if line["event"] == "capture_failed"
    ]  # fmt: skip
    assert [(f["Model"], f["Alias"], f["CaptureErrors"], f["CaptureRecordsLost"])
            for f in failures] == [("iris", "prod", 1, 3)]  # fmt: skip
    assert "NoSuchBucket" in failures[0]["error"]


def test_shadow_runs_are_not_captured(
    client: Client, aliases: AliasStore, s3: S3Client
) -> None:
    aliases.set_routing("iris", "prod", {1: 100}, shadow=Shadow(2, 100), actor="t")
    aliases.set_capture("iris", "prod", Capture(100), actor="tests")
    for _ in range(3):
        predict(client, IRIS_ROWS)
    (records,) = captured(s3).values()
    assert [record["version"] for record in records] == [1, 1, 1]
