"""Batch file chunks: splitting, parsing, rejection reasons, formatting (pure)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from chalicelib import tabular
from chalicelib.errors import BatchFileError
from chalicelib.registry.manifest import Manifest, Signature, TensorSpec
from chalicelib.tabular import CSV, JSONL, CsvTable, JsonLinesTable, RecordSplitter

IRIS = Signature(
    inputs=(TensorSpec("float_input", "FP32", (-1, 4)),),
    outputs=(
        TensorSpec("label", "INT64", (-1,)),
        TensorSpec("probabilities", "FP32", (-1, 3)),
    ),
)
LABELS = ("setosa", "versicolor", "virginica")
MIXED = Signature(
    inputs=(
        TensorSpec("x", "FP64", (-1, 2)),
        TensorSpec("n", "INT8", (-1,)),
        TensorSpec("flag", "BOOL", (-1, 1)),
    ),
    outputs=(TensorSpec("y", "FP32", (-1, 1)),),
)
TEXT = Signature(
    inputs=(TensorSpec("text", "BYTES", (-1, 1)),),
    outputs=(TensorSpec("score", "FP32", (-1,)),),
)


def manifest(signature: Signature, labels: tuple[str, ...] | None = None) -> Manifest:
    return Manifest(
        "m", 1, "0" * 64, 1, "2026-01-01T00:00:00.000Z", signature, labels=labels
    )


IRIS_FEATURES = tabular.features_of(manifest(IRIS))
MIXED_FEATURES = tabular.features_of(manifest(MIXED))


def csv_table(
    header: str, features: tuple[tabular.Feature, ...] = IRIS_FEATURES
) -> CsvTable:
    return CsvTable.from_header(header.encode(), features)


# -- features and fields -----------------------------------------------------------


def test_features_take_the_per_row_shape() -> None:
    assert [(f.name, f.datatype, f.shape, f.size) for f in MIXED_FEATURES] == [
        ("x", "FP64", (2,), 2),
        ("n", "INT8", (), 1),
        ("flag", "BOOL", (1,), 1),
    ]


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        (
            (1, 4),
            "input 'a' has shape [1, 4]: batch files need a dynamic first (row) "
            "dimension",
        ),
        (
            (),
            "input 'a' has shape []: batch files need a dynamic first (row) dimension",
        ),
        (
            (-1, -1),
            "input 'a' has shape [-1, -1]: batch files need a fixed number of "
            "values per row",
        ),
    ],
)
def test_inputs_rows_cannot_feed_are_refused(
    shape: tuple[int, ...], message: str
) -> None:
    signature = Signature(
        inputs=(TensorSpec("a", "FP32", shape),), outputs=IRIS.outputs
    )
    with pytest.raises(BatchFileError) as caught:
        tabular.features_of(manifest(signature))
    assert str(caught.value) == message


def test_classifier_fields_are_the_label_and_one_probability_per_class() -> None:
    fields = tabular.output_fields(manifest(IRIS, LABELS))
    renderer = tabular.make_renderer(fields, CSV)
    assert renderer.csv_columns == [
        "label",
        "probability_setosa",
        "probability_versicolor",
        "probability_virginica",
    ]
    unnamed = tabular.make_renderer(tabular.output_fields(manifest(IRIS)), CSV)
    assert unnamed.csv_columns[1:] == [
        "probability_0",
        "probability_1",
        "probability_2",
    ]


def test_other_models_get_one_column_per_output_value() -> None:
    signature = Signature(
        inputs=IRIS.inputs,
        outputs=(
            TensorSpec("variable", "FP32", (-1, 1)),
            TensorSpec("z", "FP32", (-1, 2)),
        ),
    )
    fields = tabular.output_fields(manifest(signature))
    assert [(f.key, f.columns, f.as_list) for f in fields] == [
        ("variable", ("variable",), False),
        ("z", ("z_0", "z_1"), True),
    ]


def test_open_output_widths_come_from_a_prediction() -> None:
    signature = Signature(
        inputs=IRIS.inputs, outputs=(TensorSpec("z", "FP32", (-1, -1)),)
    )
    assert tabular.open_widths(manifest(signature)) == ["z"]
    fields = tabular.output_fields(manifest(signature), {"z": 3})
    assert fields[0].columns == ("z_0", "z_1", "z_2")


# -- splitting a stream into chunks of records --------------------------------------


def split(
    data: bytes, *, rows: int = 2, block: int = 3, header: bool = True
) -> tuple[bytes | None, list[bytes]]:
    splitter = RecordSplitter(rows, quoted=True, header=header, max_record_bytes=1000)
    chunks: list[bytes] = []
    for start in range(0, len(data), block):
        chunks += splitter.feed(data[start : start + block])
    chunks += splitter.close()
    return splitter.header, chunks


def test_chunks_hold_whole_records_and_at_most_the_row_count() -> None:
    header, chunks = split(b"h1,h2\r\n1,2\n3,4\n5,6\n7,8")
    assert header == b"h1,h2"
    assert b"".join(chunks) == b"1,2\n3,4\n5,6\n7,8\n"
    assert all(chunk.endswith(b"\n") and chunk.count(b"\n") <= 2 for chunk in chunks)


def test_a_byte_order_mark_is_dropped_even_when_split_across_blocks() -> None:
    header, chunks = split(b"\xef\xbb\xbfa,b\n1,2\n", block=1)
    assert header == b"a,b"
    assert chunks == [b"1,2\n"]


def test_a_newline_inside_quotes_does_not_end_a_record() -> None:
    _, chunks = split(b'a,b\n1,"x\ny"\n2,z\n', rows=1, block=100)
    assert chunks == [b'1,"x\ny"\n', b"2,z\n"]


def test_a_header_without_rows_or_newline_is_still_a_header() -> None:
    assert split(b"a,b") == (b"a,b", [])
    assert split(b"") == (None, [])


def test_a_record_longer_than_the_limit_is_refused() -> None:
    splitter = RecordSplitter(10, quoted=False, header=False, max_record_bytes=10)
    with pytest.raises(BatchFileError, match="a record is longer than 10 bytes"):
        splitter.feed(b"x" * 11)


# -- CSV headers ------------------------------------------------------------------


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


def parse_both(table: CsvTable, chunk: bytes) -> tabular.ParsedChunk:
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


NOT_A_NUMBER = "not a number, model expects FP32"
NOT_FINITE = "not a finite number; this model does not take NaN or Infinity"


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
    assert parsed.rejections == [tabular.Rejection(11, 21, row, reason)]
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
    features = tabular.features_of(manifest(TEXT))
    table = CsvTable.from_header(b"id,text", features)
    assert table.by_name and table.positions == (1,)
    parsed = table.parse(b'1,"hello, world"\n', 1, 2)
    assert parsed.inputs["text"].tolist() == [["hello, world"]]


# -- JSON Lines rows --------------------------------------------------------------


def json_table(features: tuple[tabular.Feature, ...] = IRIS_FEATURES) -> JsonLinesTable:
    return JsonLinesTable(features, frozenset({"label", "probabilities"}))


def test_json_rows_are_arrays_or_objects_by_name_or_by_position() -> None:
    chunk = (
        b'[5.1, 3.5, 1.4, 0.2, "extra"]\n'
        b'{"id": 7, "float_input": [[6.0, 3.0], [4.8, 1.8]]}\n'
        b"\n"
        b'  {"a": 1, "b": 2, "c": 3, "d": 4, "e": "x"}  \n'
        b'{"id": 8, "label": "setosa", "float_input": [1, 2, 3, 4]}\n'
    )
    parsed = json_table().parse(chunk, 1, 1)
    assert parsed.rows == 4 and parsed.lines == 5 and not parsed.rejections
    assert parsed.heads == [
        b'[5.1, 3.5, 1.4, 0.2, "extra"',
        b'{"id": 7, "float_input": [[6.0, 3.0], [4.8, 1.8]]',
        b'{"a": 1, "b": 2, "c": 3, "d": 4, "e": "x"',
        b'{"id": 8, "label": "setosa", "float_input": [1, 2, 3, 4]',
    ]
    assert parsed.kinds is not None
    assert parsed.kinds.tolist() == [
        tabular.ARRAY_ROW,
        tabular.OBJECT_ROW,
        tabular.OBJECT_ROW,
        tabular.OBJECT_ROW_PREFIXED,
    ]
    np.testing.assert_array_equal(
        parsed.inputs["float_input"],
        np.array(
            [[5.1, 3.5, 1.4, 0.2], [6, 3, 4.8, 1.8], [1, 2, 3, 4], [1, 2, 3, 4]],
            np.float32,
        ),
    )


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("[1, 2, 3", "not valid JSON: Expecting ',' delimiter at column 9"),
        ('"text"', "a row must be a JSON array or object, not str"),
        ("null", "a row must be a JSON array or object, not null"),
        ("[1, 2, 3]", "the array has 3 values, the model takes 4"),
        (
            '{"a": 1}',
            "missing key 'float_input' (or give the model's 4 values by position; "
            "the object has 1)",
        ),
        (
            '{"float_input": [1, 2, 3]}',
            "key 'float_input' has 3 values, input expects 4",
        ),
        ('[1, "2", 3, 4]', f'value 1 is "2", {NOT_A_NUMBER}'),
        ("[1, true, 3, 4]", f"value 1 is true, {NOT_A_NUMBER}"),
        ("[1, [2], 3, 4]", "value 1 is [2], not a single value"),
        ("[1, 2, NaN, 4]", f"value 2 is NaN, {NOT_FINITE}"),
        (
            '{"float_input": [1, 2, null, 4]}',
            f"float_input[2] is null, {NOT_A_NUMBER}",
        ),
    ],
)
def test_bad_json_rows_are_rejected_with_their_reason(line: str, reason: str) -> None:
    chunk = f"[1, 2, 3, 4]\n{line}\n".encode()
    parsed = json_table().parse(chunk, 5, 9)
    assert parsed.rows == 2 and len(parsed.heads) == 1
    assert parsed.rejections == [tabular.Rejection(6, 10, line, reason)]


def test_json_objects_name_every_input_or_are_rejected() -> None:
    parsed = json_table(MIXED_FEATURES).parse(
        b'{"x": [1, 2], "n": 300, "flag": true}\n{"x": [1, 2], "flag": 1}\n', 1, 1
    )
    assert [item.reason for item in parsed.rejections] == [
        "key 'n' is 300, out of range for INT8 (-128 to 127)",
        "missing key 'n'",
    ]


# -- formatting ---------------------------------------------------------------------


def cells(matrix: np.ndarray) -> list[str]:
    return [bytes(row[row != 0]).decode() for row in matrix]


def test_fp32_floats_are_written_exactly_like_printf() -> None:
    rng = np.random.default_rng(7)
    values = np.concatenate(
        [
            rng.random(2000, dtype=np.float32),
            (rng.standard_normal(2000) * 10.0 ** rng.integers(-8, 12, 2000)).astype(
                np.float32
            ),
            np.array(
                [0.0, -0.0, 1.0, -1e-9, 0.5, 2.5e-7, 8.9e12, 123456.5], np.float32
            ),
        ]
    )
    assert cells(tabular.format_floats(values, CSV)) == [
        f"{float(v):.6f}" for v in values
    ]


def test_fp64_huge_and_non_finite_floats_take_the_exact_path() -> None:
    values = np.array([0.4999995, 1e20, -2.5], np.float64)
    assert cells(tabular.format_floats(values, CSV)) == [
        "0.499999",
        "100000000000000000000.000000",
        "-2.500000",
    ]
    special = np.array([np.nan, np.inf, -np.inf, 1.0], np.float32)
    assert cells(tabular.format_floats(special, CSV)) == [
        "NaN",
        "inf",
        "-inf",
        "1.000000",
    ]
    assert cells(tabular.format_floats(special, JSONL)) == [
        "null",
        "null",
        "null",
        "1.000000",
    ]


def test_integers_are_written_in_decimal() -> None:
    values = np.array(
        [
            0,
            7,
            -7,
            10_000,
            -123_456_789_012,
            np.iinfo(np.int64).max,
            np.iinfo(np.int64).min,
        ]
    )
    assert cells(tabular.format_integers(values)) == [str(int(v)) for v in values]
    big = np.array([0, np.iinfo(np.uint64).max], np.uint64)
    assert cells(tabular.format_integers(big)) == ["0", str(np.iinfo(np.uint64).max)]


def test_labels_are_names_when_known_and_numbers_otherwise() -> None:
    names = ("setosa", 'a "quoted", name', "multi\nline")
    indices = np.array([2, 0, 1], np.int64)
    assert cells(tabular.format_labels(indices, names, CSV)) == [
        "multi line",
        "setosa",
        '"a ""quoted"", name"',
    ]
    assert cells(tabular.format_labels(indices, names, JSONL)) == [
        '"multi line"',
        '"setosa"',
        '"a \\"quoted\\", name"',
    ]
    assert cells(tabular.format_labels(np.array([3, 0]), names, CSV)) == ["3", "0"]
    assert cells(tabular.format_labels(indices, None, CSV)) == ["2", "0", "1"]
    strings = np.array(["cat", "dog"], dtype=object)
    assert cells(tabular.format_cells(strings, JSONL)) == ['"cat"', '"dog"']


OUTPUTS: dict[str, np.ndarray] = {
    "label": np.array([0, 2], np.int64),
    "probabilities": np.array([[0.9, 0.1, 0.0], [0.0, 0.25, 0.75]], np.float32),
}


def test_csv_rows_get_the_prediction_columns_appended() -> None:
    renderer = tabular.make_renderer(
        tabular.output_fields(manifest(IRIS, LABELS)), CSV, ["id", "x"]
    )
    suffixes = renderer.suffixes(OUTPUTS, None)
    assert tabular.assemble([b"1,a", b"2,b"], suffixes) == (
        b"1,a,setosa,0.900000,0.100000,0.000000\n"
        b"2,b,virginica,0.000000,0.250000,0.750000\n"
    )
    assert renderer.csv_header(b"id,x") == (
        b"id,x,label,probability_setosa,probability_versicolor,probability_virginica\n"
    )


def test_csv_prediction_columns_that_clash_with_the_input_get_a_prefix() -> None:
    renderer = tabular.make_renderer(
        tabular.output_fields(manifest(IRIS, LABELS)), CSV, ["id", " label"]
    )
    assert renderer.csv_columns[:2] == [
        "predicted_label",
        "predicted_probability_setosa",
    ]


def test_json_rows_get_fields_in_their_own_shape() -> None:
    fields = tabular.output_fields(manifest(IRIS, LABELS))
    renderer = tabular.make_renderer(fields, JSONL)
    kinds = np.array([tabular.ARRAY_ROW, tabular.OBJECT_ROW_PREFIXED], np.int8)
    rows = tabular.assemble(
        [b"[1, 2", b'{"label": "x"'], renderer.suffixes(OUTPUTS, kinds)
    )
    first, second = rows.decode().splitlines()
    assert json.loads(first) == [1, 2, "setosa", 0.9, 0.1, 0.0]
    assert json.loads(second) == {
        "label": "x",
        "predicted_label": "virginica",
        "predicted_probabilities": {
            "setosa": 0.0,
            "versicolor": 0.25,
            "virginica": 0.75,
        },
    }
    plain = tabular.assemble(
        [b'{"id": 1'],
        renderer.suffixes(
            {k: v[:1] for k, v in OUTPUTS.items()},
            np.array([tabular.OBJECT_ROW], np.int8),
        ),
    )
    assert json.loads(plain) == {
        "id": 1,
        "label": "setosa",
        "probabilities": {"setosa": 0.9, "versicolor": 0.1, "virginica": 0.0},
    }
    unlabelled = tabular.make_renderer(tabular.output_fields(manifest(IRIS)), JSONL)
    bare = tabular.assemble(
        [b'{"id": 1'],
        unlabelled.suffixes(
            {k: v[:1] for k, v in OUTPUTS.items()},
            np.array([tabular.OBJECT_ROW], np.int8),
        ),
    )
    assert json.loads(bare)["probabilities"] == [0.9, 0.1, 0.0]


def test_regression_values_are_scalars_in_json_and_columns_in_csv() -> None:
    signature = Signature(
        inputs=IRIS.inputs, outputs=(TensorSpec("variable", "FP32", (-1, 1)),)
    )
    fields = tabular.output_fields(manifest(signature))
    outputs: dict[str, np.ndarray] = {
        "variable": np.array([[151.25], [-0.5]], np.float32)
    }
    csv_rows = tabular.assemble(
        [b"a", b"b"], tabular.make_renderer(fields, CSV).suffixes(outputs, None)
    )
    assert csv_rows == b"a,151.250000\nb,-0.500000\n"
    kinds = np.array([tabular.OBJECT_ROW, tabular.OBJECT_ROW], np.int8)
    json_rows = tabular.assemble(
        [b'{"i": 1', b'{"i": 2'],
        tabular.make_renderer(fields, JSONL).suffixes(outputs, kinds),
    )
    assert [json.loads(line)["variable"] for line in json_rows.splitlines()] == [
        151.25,
        -0.5,
    ]
    assert not math.isnan(json.loads(json_rows.splitlines()[0])["variable"])


def test_rejections_are_json_lines() -> None:
    rejection = tabular.Rejection(3, 4, "1,é", "column 'x' is empty")
    assert json.loads(rejection.to_json()) == {
        "row": 3,
        "line": 4,
        "raw": "1,é",
        "reason": "column 'x' is empty",
    }
