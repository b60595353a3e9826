"""Which external data files a model names, and the figures that bound the
largest model a function serves: /tmp as the stage sets it, the file cache
derived from it, the function's memory; the package step gives each function
its /tmp."""

from __future__ import annotations

from typing import Any

from onnx import TensorProto, helper

from chalicelib.config import Settings, function_memory_bytes
from chalicelib.model_header import external_data_locations
from tools.package import size_ephemeral_storage

MIB = 1024 * 1024


def test_the_file_cache_is_three_quarters_of_tmp_unless_set() -> None:
    assert Settings.from_env({}).file_cache_bytes == 384 * MIB
    stage = Settings.from_env({"TURNOUT_EPHEMERAL_STORAGE_MB": "2048"})
    assert (stage.tmp_bytes, stage.file_cache_bytes) == (2048 * MIB, 1536 * MIB)
    explicit = Settings.from_env(
        {"TURNOUT_EPHEMERAL_STORAGE_MB": "2048", "TURNOUT_MODEL_FILE_CACHE_BYTES": "7"}
    )
    assert explicit.file_cache_bytes == 7


def test_the_function_memory_is_lambdas_figure_in_mb() -> None:
    assert function_memory_bytes({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3008"}) == (
        3008 * MIB
    )
    assert function_memory_bytes({}) is None


def lambda_function(variables: dict[str, str]) -> dict[str, Any]:
    return {"function_name": "f", "environment": {"variables": variables}}


def test_each_function_gets_the_tmp_its_environment_names() -> None:
    template: dict[str, Any] = {
        "resource": {
            "aws_lambda_function": {
                "api_handler": lambda_function(
                    {"TURNOUT_EPHEMERAL_STORAGE_MB": "2048"}
                ),
                "batch": lambda_function({"TURNOUT_EPHEMERAL_STORAGE_MB": "4096"}),
                "other": lambda_function({}),
            }
        }
    }
    size_ephemeral_storage(template)
    functions = template["resource"]["aws_lambda_function"]
    assert functions["api_handler"]["ephemeral_storage"] == {"size": 2048}
    assert functions["batch"]["ephemeral_storage"] == {"size": 4096}
    assert "ephemeral_storage" not in functions["other"]


def external_tensor(name: str, location: str) -> TensorProto:
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[2])
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "8")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def test_external_data_locations_name_each_file_once_in_order() -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])],
        "g",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [
            external_tensor("a", "b.bin"),
            external_tensor("b", "a.bin"),
            external_tensor("c", "b.bin"),
            helper.make_tensor("d", TensorProto.FLOAT, [1], [1.0]),
        ],
    )
    data = helper.make_model(graph).SerializeToString()
    assert external_data_locations(data) == ["b.bin", "a.bin"]


def test_a_model_without_external_data_or_not_a_model_names_none() -> None:
    graph = helper.make_graph([], "g", [], [])
    assert external_data_locations(helper.make_model(graph).SerializeToString()) == []
    assert external_data_locations(b"\xff\xff not a protobuf") == []
