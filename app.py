"""Turnout's deployment manifest: every route and event handler, each a few lines.

The work happens in ``chalicelib``: ``rest`` speaks the REST protocols over the
prediction core, ``batch`` streams S3 files through the same core.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from chalice.app import Chalice, CloudWatchEvent, Response, S3Event, SQSEvent

from chalicelib import extension, rest, wiring
from chalicelib.config import FEEDBACK_PREFIX, INCOMING_PREFIX, Settings

app = Chalice(app_name="turnout")
# Chalice gives its logger ("turnout", parent of the core's "turnout.predictions"
# and "turnout.rest") a stdout handler, level ERROR and propagate=False: without
# this the INFO record of every prediction and shadow run would be dropped.
app.log.setLevel(logging.INFO)

# On Lambda, the work queued after each answer (shadow runs, capture writes) runs
# in an internal extension, which must register now, during init; the middleware
# tells it when the handler is done. Elsewhere neither happens.
if extension.register_at_init(drain=lambda: wiring.container().work.run_pending()):
    app.register_middleware(extension.after_each_invocation, "all")
    # At shutdown (SIGTERM, sent because the layer's turnout-shutdown extension
    # subscribes to SHUTDOWN), write the captured requests and labels still
    # buffered.
    extension.flush_on_sigterm(lambda: wiring.container().flush_evidence())

# Models that TURNOUT_PRELOAD names are loaded now, during init, so that no request
# waits for them (chalicelib.preload); a malformed value fails the init.
if Settings.from_env().preload:
    wiring.preload()

# --- REST: Open Inference Protocol (V2) and instances ------------------------

# Every content type reaches the handlers, which refuse what they do not read with
# the protocol's JSON error body (Chalice's own 415 would be {"Code", "Message"}).
# application/octet-stream stays in app.api.binary_types (a Chalice default), so
# API Gateway hands binary tensor data to the function as bytes.
ANY_CONTENT_TYPE = ["*/*"]
# Deployed, every route but /v2/health/* needs an API key of a usage plan (see
# docs/api.md); chalice local and chalice.test ignore it.
KEYED = {"content_types": ANY_CONTENT_TYPE, "api_key_required": True}
# Answers are serialised here: Chalice's json.dumps with options would build an
# encoder for every response.
_encode_json = json.JSONEncoder(separators=(",", ":")).encode


def _serve(
    handler: Callable[[rest.Request], rest.Response], **path: str | None
) -> Response:
    """Hand the current request to ``handler`` and its answer back to Chalice."""
    current = app.current_request
    assert current is not None  # Chalice sets it before calling a view
    body = current.raw_body
    answer = handler(
        rest.Request(
            method=current.method,
            path_params={key: value for key, value in path.items() if value},
            query_params=dict(current.query_params or {}),
            # The event's own headers: Chalice's case-insensitive copy would be
            # lower-cased again on every lookup.
            headers=current.to_original_event()["headers"] or {},
            body=body if isinstance(body, bytes) else body.encode(),
            request_id=current.context.get("requestId") or uuid.uuid4().hex,
        )
    )
    headers: dict[str, str | list[str]] = dict(answer.headers)
    return Response(
        body=_encode_json(answer.body), status_code=answer.status, headers=headers
    )


@app.route("/v2/health/live", methods=["GET"], content_types=ANY_CONTENT_TYPE)
def v2_live() -> Response:
    return _serve(wiring.rest_api().live)


@app.route("/v2/health/ready", methods=["GET"], content_types=ANY_CONTENT_TYPE)
def v2_ready() -> Response:
    return _serve(wiring.rest_api().ready)


@app.route("/v2", methods=["GET"], **KEYED)
def v2_server_metadata() -> Response:
    return _serve(wiring.rest_api().server_metadata)


@app.route("/v2/models/{name}", methods=["GET"], **KEYED)
@app.route(
    "/v2/models/{name}/versions/{version}",
    methods=["GET"],
    **KEYED,
)
def v2_model_metadata(name: str, version: str | None = None) -> Response:
    return _serve(wiring.rest_api().model_metadata, name=name, version=version)


@app.route("/v2/models/{name}/ready", methods=["GET"], **KEYED)
@app.route(
    "/v2/models/{name}/versions/{version}/ready",
    methods=["GET"],
    **KEYED,
)
def v2_model_ready(name: str, version: str | None = None) -> Response:
    return _serve(wiring.rest_api().model_ready, name=name, version=version)


@app.route("/v2/models/{name}/infer", methods=["POST"], **KEYED)
@app.route(
    "/v2/models/{name}/versions/{version}/infer",
    methods=["POST"],
    **KEYED,
)
def v2_infer(name: str, version: str | None = None) -> Response:
    return _serve(wiring.rest_api().infer, name=name, version=version)


@app.route("/models/{name}/predict", methods=["POST"], **KEYED)
def predict(name: str) -> Response:
    return _serve(wiring.rest_api().predict, name=name)


@app.route("/models/{name}/feedback", methods=["POST"], **KEYED)
def feedback(name: str) -> Response:
    return _serve(wiring.rest_api().feedback, name=name)


# --- Batch: S3 uploads under incoming/ -----------------------------------------

# Chalice reads the bucket and the queue when it deploys: set TURNOUT_BATCH_BUCKET
# and TURNOUT_BATCH_SHARD_QUEUE for that too.
BATCH_BUCKET = Settings.from_env().batch_bucket or "turnout-batch-dev"
SHARD_QUEUE = Settings.from_env().batch_shard_queue or "turnout-batch-shards-dev"


@app.on_s3_event(
    bucket=BATCH_BUCKET, events=["s3:ObjectCreated:*"], prefix=INCOMING_PREFIX
)
def handle_batch_upload(event: S3Event) -> object:
    """Predict a file uploaded under incoming/ (see chalicelib.batch)."""
    # Imported here, not at the top: a REST function's cold start, paid by a
    # caller, would otherwise compile and run the batch modules it never uses.
    from chalicelib.batch import job

    context: Any = event.context  # Lambda's context object (Chalice types it dict)
    runtime = wiring.container().batch_runtime(
        lambda: context.get_remaining_time_in_millis() / 1000.0
    )
    return job.process_upload(event.bucket, event.key, runtime)


@app.on_s3_event(
    bucket=BATCH_BUCKET, events=["s3:ObjectCreated:*"], prefix=FEEDBACK_PREFIX
)
def handle_feedback_upload(event: S3Event) -> object:
    """File a labels file uploaded under feedback/ (see chalicelib.feedback)."""
    return wiring.container().labels_file(event.key)


@app.on_sqs_message(queue=SHARD_QUEUE, batch_size=1)
def handle_batch_shard(event: SQSEvent) -> list[dict[str, Any]]:
    """Predict one shard of a fanned-out file (see chalicelib.batch.fanout); an
    error makes SQS deliver the message again, up to the queue's maxReceiveCount,
    then to its dead-letter queue."""
    from chalicelib.batch.fanout import shard

    context: Any = event.context
    runtime = wiring.container().batch_runtime(
        lambda: context.get_remaining_time_in_millis() / 1000.0
    )
    return [
        shard.process_shard(
            record.body,
            runtime,
            attempt=int(record.to_dict()["attributes"]["ApproximateReceiveCount"]),
        )
        for record in event
    ]


# --- Progressive rollouts: evaluated on a schedule -----------------------------


@app.schedule("rate(1 minute)")
def evaluate_rollouts(event: CloudWatchEvent) -> None:
    """Evaluate every active rollout that is due (see chalicelib.rollout); make
    dev runs this every TURNOUT_DEV_SCHEDULE_SECONDS."""
    from chalicelib.rollout import runner

    runner.evaluate_all(runner.default_runtime())
