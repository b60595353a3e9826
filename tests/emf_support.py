"""The CloudWatch Embedded Metric Format specification, as a checker for tests.

Written from the published specification ("Specification: Embedded metric
format", Amazon CloudWatch User Guide): the JSON schema below covers the
structure (the ``_aws`` metadata object, MetricDirectives, DimensionSets of at
most 30 keys, at most 100 MetricDefinitions, the units CloudWatch accepts);
``check_emf`` adds the rules a schema cannot say: every dimension key and metric
name is a root member (a target member), dimension values are strings, metric
values are numbers or arrays of at most 100 numbers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jsonschema

UNITS = [
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes",
    "Gigabytes", "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits",
    "Terabits", "Percent", "Count", "Bytes/Second", "Kilobytes/Second",
    "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second",
    "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second",
    "Count/Second", "None",
]  # fmt: skip

EMF_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["_aws"],
    "properties": {
        "_aws": {
            "type": "object",
            "required": ["Timestamp", "CloudWatchMetrics"],
            "properties": {
                "Timestamp": {"type": "integer", "minimum": 0},
                "CloudWatchMetrics": {
                    "type": "array",
                    "items": {"$ref": "#/$defs/MetricDirective"},
                },
            },
        }
    },
    "$defs": {
        "MetricDirective": {
            "type": "object",
            "required": ["Namespace", "Dimensions", "Metrics"],
            "additionalProperties": False,
            "properties": {
                "Namespace": {"type": "string", "minLength": 1, "maxLength": 255},
                "Dimensions": {
                    "type": "array",
                    "items": {
                        "type": "array",
                        "maxItems": 30,
                        "items": {"type": "string", "minLength": 1, "maxLength": 250},
                    },
                },
                "Metrics": {
                    "type": "array",
                    "maxItems": 100,
                    "items": {
                        "type": "object",
                        "required": ["Name"],
                        "additionalProperties": False,
                        "properties": {
                            "Name": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": 1024,
                            },
                            "Unit": {"enum": UNITS},
                            "StorageResolution": {"enum": [1, 60]},
                        },
                    },
                },
            },
        }
    },
}


def check_emf(document: Mapping[str, Any]) -> None:
    """Raise AssertionError (or jsonschema's ValidationError) unless
    ``document`` is a valid EMF document."""
    jsonschema.validate(document, EMF_SCHEMA)
    for directive in document["_aws"]["CloudWatchMetrics"]:
        for keys in directive["Dimensions"]:
            for key in keys:
                value = document.get(key)
                assert isinstance(value, str), f"dimension {key!r} is {value!r}"
                assert 0 < len(value) <= 1024, f"dimension {key!r} is {value!r}"
        for metric in directive["Metrics"]:
            value = document.get(metric["Name"])
            values = value if isinstance(value, list) else [value]
            assert 0 < len(values) <= 100, f"metric {metric['Name']!r} is {value!r}"
            for number in values:
                assert isinstance(number, int | float) and not isinstance(
                    number, bool
                ), f"metric {metric['Name']!r} is {value!r}"


def emf_lines(text: str) -> list[dict[str, Any]]:
    """The EMF documents among ``text``'s lines (each one checked)."""
    documents = []
    for line in text.splitlines():
        if line.startswith('{"_aws"'):
            document = json.loads(line)
            check_emf(document)
            documents.append(document)
    return documents
