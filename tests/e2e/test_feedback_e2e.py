"""Labels files through the dev stack: an upload under feedback/ in the batch
bucket reaches ``handle_feedback_upload`` (``make dev`` pumps its events), which
files its labels in the capture bucket and reports its bad rows."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

from chalicelib.record_buffer import read_records
from tests.e2e.e2e_support import eventually
from tools.devstack.stack import DevStack


def test_a_labels_file_uploaded_under_feedback_is_filed_with_its_bad_rows_reported(
    dev_stack: DevStack, wait_for_object: Callable[..., bytes]
) -> None:
    model = f"labels-{uuid.uuid4().hex[:8]}"  # only this test's labels there
    key = f"feedback/{model}/day.csv"
    dev_stack.s3.put_object(
        Bucket=dev_stack.batch_bucket, Key=key, Body=b"id,label\nr-1,2\n,0\n"
    )

    report = wait_for_object(dev_stack.batch_bucket, f"outgoing/{key}.errors.jsonl")
    assert [json.loads(line)["reason"] for line in report.splitlines()] == ["id: empty"]

    def filed() -> list[str] | None:
        listing = dev_stack.s3.list_objects_v2(
            Bucket=dev_stack.capture_bucket, Prefix=f"feedback/{model}/"
        ).get("Contents", [])
        return [item["Key"] for item in listing] or None

    (stored,) = eventually(filed, timeout=30.0, message=dev_stack.logs)
    body = dev_stack.s3.get_object(Bucket=dev_stack.capture_bucket, Key=stored)
    records = read_records(body["Body"].read())
    assert [(r["id"], r["label"], r["source"]) for r in records] == [
        ("r-1", 2, "batch")
    ]
