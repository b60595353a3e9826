"""Hostile input over REST, on the real app and a moto registry: whatever a caller
sends gets an answer below 500 that names no internals, in time linear in its
size."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest
from chalice.test import Client, HTTPResponse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.demo_support import ROOT

CHALICELIB = str(ROOT / "chalicelib")

V2_PATHS = ["/v2/models/iris/infer", "/v2/models/iris/versions/1/infer"]
# What an answer must never show: a traceback, onnxruntime's own text, a Python
# exception's name or a source file.
INTERNALS = re.compile(
    r"Traceback|onnxruntime|\bFile \"|\.py\b|\b[A-Z][A-Za-z]*(Error|Exception)\b"
)
DATATYPES = ["FP32", "FP64", "INT64", "BOOL", "BYTES", "fp32", "FLOAT", ""]
HOSTILE = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def post(
    client: Client, path: str, body: bytes, headers: dict[str, str] | None = None
) -> HTTPResponse:
    return client.http.post(
        path, body=body, headers={"Content-Type": "application/json", **(headers or {})}
    )


def assert_refused_cleanly(response: HTTPResponse) -> str:
    """The answer is below 500, JSON, and names no internals; its error text."""
    assert response.status_code < 500, response.body[:500]
    document = json.loads(response.body)
    text = json.dumps(document)
    assert not INTERNALS.search(text), text[:500]
    if response.status_code >= 400:
        assert set(document) == {"error"}
        error: str = document["error"]
        return error
    return ""


# -- strategies ----------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=8),
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
ROW = st.one_of(
    st.lists(st.floats(-10, 10), min_size=4, max_size=4),
    st.lists(SCALARS, max_size=6),
    JSON,
)
TENSOR = st.fixed_dictionaries(
    {
        "name": st.one_of(st.just("float_input"), st.text(max_size=6), JSON),
        "shape": st.one_of(
            st.lists(st.integers(-2, 5), max_size=4),
            st.lists(st.integers(), max_size=3),
            JSON,
        ),
        "datatype": st.one_of(st.sampled_from(DATATYPES), JSON),
        "data": st.one_of(st.lists(ROW, max_size=3), st.lists(SCALARS), JSON),
    },
    optional={
        "parameters": st.one_of(
            st.fixed_dictionaries({"binary_data_size": st.integers(-2, 64)}), JSON
        )
    },
)
V2_BODY = st.fixed_dictionaries(
    {"inputs": st.one_of(st.lists(TENSOR, max_size=3), JSON)},
    optional={
        "outputs": st.one_of(
            st.lists(st.fixed_dictionaries({"name": st.text(max_size=12)})), JSON
        ),
        "id": JSON,
        "parameters": JSON,
    },
)
INSTANCES_BODY = st.fixed_dictionaries(
    {
        "instances": st.one_of(
            st.lists(ROW, max_size=4),
            st.lists(st.dictionaries(st.sampled_from(["float_input", "x"]), ROW)),
            JSON,
        )
    }
)
HEADER_VALUES = st.one_of(
    st.none(),
    st.integers(-5, 300).map(str),
    st.sampled_from(["²", "١٢", "1" * 5000, "0x10", " 12 ", "+3", "1e2", ""]),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=6),
)
CONTENT_TYPES = st.sampled_from(
    ["application/json", "application/octet-stream", "text/plain", "", "*/*"]
)


def encode(document: Any) -> bytes:
    return json.dumps(document).encode()


@HOSTILE
@given(
    document=st.one_of(V2_BODY, JSON),
    tail=st.binary(max_size=32),
    length=HEADER_VALUES,
    content_type=CONTENT_TYPES,
    path=st.sampled_from(V2_PATHS),
)
def test_no_v2_request_gets_a_5xx_or_internals(
    client: Client,
    document: Any,
    tail: bytes,
    length: str | None,
    content_type: str,
    path: str,
) -> None:
    headers = {"Content-Type": content_type}
    if length is not None:
        headers["Inference-Header-Content-Length"] = length
    assert_refused_cleanly(post(client, path, encode(document) + tail, headers))


@HOSTILE
@given(document=st.one_of(INSTANCES_BODY, JSON), raw=st.binary(max_size=64))
def test_no_instances_request_gets_a_5xx_or_internals(
    client: Client, document: Any, raw: bytes
) -> None:
    assert_refused_cleanly(post(client, "/models/iris/predict", encode(document)))
    assert_refused_cleanly(post(client, "/models/iris/predict", raw))


# -- the numbered cases of issue 9 ----------------------------------------------------


def test_instances_nested_a_thousand_deep_are_a_400(client: Client) -> None:
    body = b'{"instances": [' + b"[" * 1000 + b"1" + b"]" * 1000 + b"]}"
    response = post(client, "/models/iris/predict", body)
    assert response.status_code == 400
    assert assert_refused_cleanly(response) == (
        "instances[0]: nested more than 64 lists deep, model expects rows of shape [4]"
    )


HUGE = b"7" * 5000


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/models/iris/predict", b'{"instances": [[1, 2, 3, ' + HUGE + b"]]}"),
        (
            V2_PATHS[0],
            b'{"inputs": [{"name": "float_input", "shape": [1, 4], '
            b'"datatype": "FP32", "data": [1, 2, 3, ' + HUGE + b"]}]}",
        ),
        (
            V2_PATHS[0],
            b'{"inputs": [{"name": "float_input", "shape": [1, ' + HUGE + b"], "
            b'"datatype": "FP32", "data": [1, 2, 3, 4]}]}',
        ),
        (
            V2_PATHS[0],
            b'{"id": ' + HUGE + b', "inputs": [{"name": "float_input", '
            b'"shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}',
        ),
    ],
    ids=["instances", "data", "shape", "id"],
)
def test_an_integer_literal_over_4300_digits_is_a_400(
    client: Client, path: str, body: bytes
) -> None:
    response = post(client, path, body)
    assert response.status_code == 400
    assert assert_refused_cleanly(response) == (
        "body: a number has more than 4300 digits, more than any datatype holds"
    )


def test_a_binary_header_length_in_superscript_digits_is_a_400(
    client: Client,
) -> None:
    response = post(
        client,
        V2_PATHS[0],
        b'{"inputs": []}',
        {"Inference-Header-Content-Length": "²"},
    )
    assert response.status_code == 400
    assert assert_refused_cleanly(response) == (
        "Inference-Header-Content-Length: '²' is not a byte count"
    )


def many_inputs(count: int) -> bytes:
    entries = [
        {"name": f"in{index}", "shape": [1], "datatype": "FP32", "data": [1]}
        for index in range(count)
    ]
    return encode({"inputs": entries})


def lines_run(call: Callable[[], object]) -> int:
    """How many lines of Turnout's own code ``call`` runs: a cost measure that,
    unlike a clock, other processes on the machine do not disturb (the JSON
    parser and numpy are C, and linear)."""
    count = 0

    def local(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal count
        count += event == "line"
        return local

    def start(frame: FrameType, event: str, arg: object) -> Any:
        return local if frame.f_code.co_filename.startswith(CHALICELIB) else None

    sys.settrace(start)
    try:
        call()
    finally:
        sys.settrace(None)
    return count


def cost_ratio(client: Client, path: str, small: bytes, large: bytes) -> float:
    """Lines run for ``large`` over lines run for ``small`` (after a first
    request has warmed the container's caches)."""
    post(client, path, small)
    return lines_run(lambda: post(client, path, large)) / lines_run(
        lambda: post(client, path, small)
    )


def test_more_inputs_than_the_model_has_are_refused_in_linear_time(
    client: Client,
) -> None:
    small, large = many_inputs(5_000), many_inputs(20_000)
    response = post(client, V2_PATHS[0], large)
    assert response.status_code == 400
    assert assert_refused_cleanly(response) == (
        "inputs: 20000 inputs, the model takes 1 (float_input)"
    )
    # Four times the names: linear work costs about four times as much, the
    # pairwise duplicate check cost sixteen.
    assert cost_ratio(client, V2_PATHS[0], small, large) < 5


def test_a_repeated_input_name_among_many_is_found_in_linear_time(
    client: Client,
) -> None:
    def repeated(count: int) -> bytes:
        entries = json.loads(many_inputs(count))["inputs"]
        entries.append(entries[0])
        return encode({"inputs": entries})

    small, large = repeated(5_000), repeated(20_000)
    response = post(client, V2_PATHS[0], large)
    assert assert_refused_cleanly(response) == ("inputs[20000].name: 'in0' given twice")
    assert cost_ratio(client, V2_PATHS[0], small, large) < 5


def test_deep_nesting_costs_linear_time(client: Client) -> None:
    def nested(depth: int) -> bytes:
        row = b"[" * depth + b"1" + b"]" * depth
        return b'{"instances": [' + b", ".join([row] * 200) + b"]}"

    small, large = nested(200), nested(800)
    for body in (small, large):
        assert post(client, "/models/iris/predict", body).status_code == 400
    assert cost_ratio(client, "/models/iris/predict", small, large) < 5
