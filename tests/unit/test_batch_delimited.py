"""CSV chunks: the header matched to the model, rows on the fast and careful
paths, and the reason for every row rejected (pure)."""

from __future__ import annotations

import numpy as np
import pytest

from chalicelib.batch.tables.chunks import ParsedChunk, Rejection
from chalicelib.batch.tables.columns import Feature, features_of
from chalicelib.batch.tables.delimited import CsvTable
from chalicelib.errors import BatchFileError
from tests.unit.batch_tables_support import (
    IRIS_FEATURES,
    MIXED_FEATURES,
    NOT_A_NUMBER,
    NOT_FINITE,
    TEXT,
    manifest,
)


def csv_table(header: str, features: tuple[Feature, ...] = IRIS_FEATURES) -> CsvTable:
    return CsvTable.from_header(header.encode(), features)


def test_columns_named_after_the_input_are_matched_by_name_in_any_order() -> None:
    table = csv_table("id,float_input_3,float_input_1,float_input_0,note,float_input_2")
    assert table.by_name
    assert table.positions == (3, 2, 5, 1)


def test_without_a_matching_name_the_first_columns_are_taken_by_position() -> None:
    table = csv_table("sepal_length,sepal_width,petal_length,petal_width,id")
    assert not table.by_name
    assert table.positions == (0, 1, 2, 3)


def test_single_value_inputs_match_their_own_name() -> None:
    table = csv_table("flag,x_1,n,id,x_0", MIXED_FEATURES)
    assert table.positions == (4, 1, 2, 0)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("", "the first line is empty: a CSV file starts with a header"),
        (
            "a,b,c",
            "no column is named after the model's inputs (expected float_input_0, "
            "float_input_1, float_input_2, float_input_3) and the header has 3 "
            "columns, fewer than the 4 the model takes by position",
        ),
        (
            "float_input_0,float_input_1,x,y",
            "the header names float_input_0, float_input_1 but not float_input_2, "
            "float_input_3: name every input column, or none to take the first "
            "columns by position",
        ),
        (
            "float_input_0,float_input_1,float_input_2,float_input_3,float_input_1",
            "column 'float_input_1' appears twice",
        ),
    ],
)
def test_headers_that_cannot_feed_the_model_are_refused(
    header: str, message: str
) -> None:
    with pytest.raises(BatchFileError) as caught:
        csv_table(header)
    assert str(caught.value) == message


# -- CSV rows ---------------------------------------------------------------------

HEADER = "sepal_length,sepal_width,petal_length,petal_width,id"


def parse_both(table: CsvTable, chunk: bytes) -> ParsedChunk:
    """Parse a chunk on the careful path, and on the fast path when it qualifies
    (the two must agree)."""
    careful = table._parse_careful(chunk, 1, 2)
    fast = table._parse_fast(chunk)
    if fast is not None:
        assert fast.heads == careful.heads
        assert fast.rows == careful.rows and not careful.rejections
        for name, array in careful.inputs.items():
            assert fast.inputs[name].dtype == array.dtype
            np.testing.assert_array_equal(fast.inputs[name], array)
    return careful


def test_a_clean_chunk_takes_the_fast_path_with_exact_values() -> None:
    table = csv_table(HEADER)
    chunk = b"5.1,3.5,1.4,0.2,a\r\n-1e-3,+.5,7.,0.1,b\n 2 ,1E2,0,0,c\n"
    assert table._parse_fast(chunk) is not None
    parsed = parse_both(table, chunk)
    assert parsed.heads == [
        b"5.1,3.5,1.4,0.2,a",
        b"-1e-3,+.5,7.,0.1,b",
        b" 2 ,1E2,0,0,c",
    ]
    expected = np.array(
        [[5.1, 3.5, 1.4, 0.2], [-0.001, 0.5, 7.0, 0.1], [2, 100, 0, 0]], np.float32
    )
    np.testing.assert_array_equal(parsed.inputs["float_input"], expected)


@pytest.mark.parametrize(
    "chunk",
    [
        b'1,2,3,4,"a, quoted id"\n',
        b"1,2,3,4,a\n\n2,3,4,5,b\n",
        b"1,2,3,4\n",
        b"1,2,nan,4,a\n",
    ],
)
def test_chunks_the_fast_path_cannot_vouch_for_take_the_careful_path(
    chunk: bytes,
) -> None:
    assert csv_table(HEADER)._parse_fast(chunk) is None


def test_quoted_pass_through_cells_and_blank_lines_are_kept_or_skipped() -> None:
    table = csv_table(HEADER)
    parsed = table.parse(b'1,2,3,4,"Smith, ""J"""\n\n 5 ,6,7,8,"two\nlines"\n', 1, 2)
    assert parsed.heads == [b'1,2,3,4,"Smith, ""J"""', b' 5 ,6,7,8,"two\nlines"']
    assert parsed.rows == 2 and parsed.lines == 4
    np.testing.assert_array_equal(parsed.inputs["float_input"][:, 0], [1.0, 5.0])


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("1,2,3,4", "the row has 4 fields, the header has 5"),
        ("1,2,3,4,5,6", "the row has 6 fields, the header has 5"),
        ("1,,3,4,a", "column 'sepal_width' is empty"),
        ("1,abc,3,4,a", f"column 'sepal_width' is 'abc', {NOT_A_NUMBER}"),
        ("1,1_000,3,4,a", f"column 'sepal_width' is '1_000', {NOT_A_NUMBER}"),
        ("1,0x10,3,4,a", f"column 'sepal_width' is '0x10', {NOT_A_NUMBER}"),
        ("1,true,3,4,a", f"column 'sepal_width' is 'true', {NOT_A_NUMBER}"),
        ("1,2,nan,4,a", f"column 'petal_length' is 'nan', {NOT_FINITE}"),
        ("1,2,3,-inf,a", f"column 'petal_width' is '-inf', {NOT_FINITE}"),
        ("1,2,3,1e999,a", f"column 'petal_width' is '1e999', {NOT_FINITE}"),
    ],
)
def test_bad_csv_rows_are_rejected_with_their_reason(row: str, reason: str) -> None:
    table = csv_table(HEADER)
    chunk = f"1,2,3,4,first\n{row}\n5,6,7,8,last\n".encode()
    parsed = table.parse(chunk, 10, 20)
    assert parsed.heads == [b"1,2,3,4,first", b"5,6,7,8,last"]
    assert parsed.rows == 3
    assert parsed.rejections == [Rejection(11, 21, row, reason)]
    np.testing.assert_array_equal(parsed.inputs["float_input"][:, 0], [1.0, 5.0])


def test_long_pass_through_cells_are_kept_on_both_paths() -> None:
    long = "x" * 200_000
    parsed = parse_both(csv_table(HEADER), f"1,2,3,4,{long}\n".encode())
    assert parsed.heads == [f"1,2,3,4,{long}".encode()]


@pytest.mark.parametrize(
    ("cells", "reason"),
    [
        (
            "1.5,2.5,1,1,yes",
            "column 'flag' is 'yes', not a boolean, model expects BOOL",
        ),
        ("1.5,2.5,1,1,1", "column 'flag' is '1', not a boolean, model expects BOOL"),
        (
            "1.5,2.5,2.5,1,true",
            "column 'n' is '2.5', not an integer, model expects INT8",
        ),
        (
            "1.5,2.5,300,1,true",
            "column 'n' is '300', out of range for INT8 (-128 to 127)",
        ),
        (
            "1.5,2.5,-129.0,1,true",
            "column 'n' is '-129.0', out of range for INT8 (-128 to 127)",
        ),
    ],
)
def test_integer_and_boolean_inputs_reject_what_they_cannot_hold(
    cells: str, reason: str
) -> None:
    table = csv_table("x_0,x_1,n,id,flag", MIXED_FEATURES)
    parsed = table.parse(f"{cells}\n".encode(), 1, 2)
    assert [item.reason for item in parsed.rejections] == [reason]


def test_integer_and_boolean_inputs_get_their_dtypes_on_both_paths() -> None:
    table = csv_table("x_0,x_1,n,id,flag", MIXED_FEATURES)
    parsed = parse_both(table, b"1.5,2.5,-3,7,true\n0,0,4.0,8,false\n")
    assert parsed.inputs["x"].dtype == np.float64 and parsed.inputs["x"].shape == (2, 2)
    assert (
        parsed.inputs["n"].tolist() == [-3, 4] and parsed.inputs["n"].dtype == np.int8
    )
    assert parsed.inputs["flag"].tolist() == [[True], [False]]
    words = table.parse(b"1,2,3,4,true\n1,2,3,4,False\n", 1, 2)
    assert words.inputs["flag"].tolist() == [[True], [False]]


def test_string_inputs_take_the_cell_text() -> None:
    features = features_of(manifest(TEXT))
    table = CsvTable.from_header(b"id,text", features)
    assert table.by_name and table.positions == (1,)
    parsed = table.parse(b'1,"hello, world"\n', 1, 2)
    assert parsed.inputs["text"].tolist() == [["hello, world"]]
