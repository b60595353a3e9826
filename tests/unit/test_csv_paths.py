"""The fast and careful CSV paths compared on random chunks (pure): whenever the
fast path takes a chunk, the careful path takes every row of it, with the same
values and dtypes."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.batch.tables.columns import features_of
from chalicelib.batch.tables.delimited import CsvTable
from chalicelib.registry.manifest import Manifest, Signature, TensorSpec

SIGNATURE = Signature(
    inputs=(
        TensorSpec("f", "FP32", (-1, 2)),
        TensorSpec("h", "FP16", (-1,)),
        TensorSpec("d", "FP64", (-1,)),
        TensorSpec("n", "INT16", (-1,)),
        TensorSpec("u", "UINT64", (-1,)),
    ),
    outputs=(TensorSpec("y", "FP32", (-1, 1)),),
)
HEADER = b"f_0,f_1,h,d,n,u"
WORDS = [
    "nan",
    "NaN",
    "-nan",
    "inf",
    "-Infinity",
    "+inf",
    "1e39",
    "-1e39",
    "1e400",
    "70000",
    "65504",
    "1" + "0" * 30,
    "1" + "0" * 400,
    "9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "-1",
    "32768",
    "abc",
    "",
    " ",
    "1_000",
    "0x10",
    "+.5",
    "1.",
    ".5e3",
    "-0",
    "1e",
    "true",
    "\u0661",
    "1.5\u00a0",
    " 2 ",
]
FLOATS = st.one_of(
    st.integers(-100, 100).map(str),
    st.floats(-1e4, 1e4).map(repr),
    st.floats(-1e4, 1e4).map(lambda value: f"{value:.3f}"),
    st.floats(-1e4, 1e4, width=32).map(lambda value: f"{value:e}"),
)
# A clean row: numbers each column takes (n is INT16, u is UINT64).
ROW = st.tuples(
    FLOATS,
    FLOATS,
    FLOATS,
    FLOATS,
    st.one_of(st.integers(-1000, 1000).map(str), st.just("4.0")),
    st.integers(0, 2**53 - 1).map(str),
).map(list)
ODD = st.one_of(
    st.sampled_from(WORDS),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


@st.composite
def chunks(draw: st.DrawFn) -> list[list[str]]:
    """Rows of numbers, half of the time with one odd cell among them."""
    rows = draw(st.lists(ROW, min_size=1, max_size=8))
    if draw(st.booleans()):
        row = draw(st.integers(0, len(rows) - 1))
        rows[row][draw(st.integers(0, 5))] = draw(ODD)
    return rows


def table(allow_non_finite: bool) -> CsvTable:
    tags = {"turnout.non_finite": "allow"} if allow_non_finite else {}
    manifest = Manifest(
        "m", 1, "0" * 64, 1, "2026-01-01T00:00:00.000Z", SIGNATURE, tags=tags
    )
    return CsvTable.from_header(HEADER, features_of(manifest))


TABLES = {allow: table(allow) for allow in (False, True)}


@settings(
    max_examples=400,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(rows=chunks(), allow_non_finite=st.booleans())
def test_the_fast_path_takes_only_what_the_careful_path_takes(
    rows: list[list[str]], allow_non_finite: bool
) -> None:
    csv_table = TABLES[allow_non_finite]
    chunk = "".join(",".join(row) + "\n" for row in rows).encode()
    careful = csv_table._parse_careful(chunk, 1, 2)
    fast = csv_table._parse_fast(chunk)
    if fast is None:
        return
    assert not careful.rejections
    assert fast.heads == careful.heads
    assert fast.rows == careful.rows
    for name, array in careful.inputs.items():
        assert fast.inputs[name].dtype == array.dtype
        np.testing.assert_array_equal(fast.inputs[name], array)


def test_clean_chunks_take_the_fast_path() -> None:
    chunk = b"1.5,2,3.25,1e10,-7,1844674407370955\n0,0,0,0,0,0\n"
    fast = TABLES[False]._parse_fast(chunk)
    assert fast is not None and fast.rows == 2
    assert fast.inputs["u"].tolist() == [1844674407370955, 0]
