"""Model names, alias names and version numbers (pure)."""

from __future__ import annotations

import pytest

from chalicelib.errors import InvalidNameError
from chalicelib.names import (
    MAX_NAME_LENGTH,
    is_version,
    parse_version,
    validate_alias_name,
    validate_model_name,
)

CHARSET = (
    "use lowercase letters, digits, '-', '_' and '.', starting with a letter or digit"
)


@pytest.mark.parametrize(
    "name", ["iris", "a", "7", "2024", "0-model", "my-model_v1.2", "a" * 63]
)
def test_valid_model_names_are_returned_unchanged(name: str) -> None:
    assert validate_model_name(name) == name


def test_the_longest_name_is_63_characters() -> None:
    assert MAX_NAME_LENGTH == 63
    with pytest.raises(InvalidNameError) as caught:
        validate_model_name("a" * 64)
    assert str(caught.value) == (
        f"invalid model name {'a' * 64!r}: 64 characters, at most 63"
    )


def test_an_empty_name_is_refused() -> None:
    with pytest.raises(InvalidNameError) as caught:
        validate_model_name("")
    assert str(caught.value) == "invalid model name '': it is empty"


@pytest.mark.parametrize(
    "name", ["Iris", "my model", "iris/v1", "iris@prod", "ir\u00eds", "iris\n", "a+b"]
)
def test_names_outside_the_charset_are_refused(name: str) -> None:
    with pytest.raises(InvalidNameError) as caught:
        validate_model_name(name)
    assert str(caught.value) == f"invalid model name {name!r}: {CHARSET}"
    assert caught.value.kind == "model"
    assert caught.value.value == name


@pytest.mark.parametrize("name", ["-iris", "_iris", ".iris", ".."])
def test_names_start_with_a_letter_or_digit(name: str) -> None:
    with pytest.raises(InvalidNameError) as caught:
        validate_model_name(name)
    assert str(caught.value) == f"invalid model name {name!r}: {CHARSET}"


@pytest.mark.parametrize("alias", ["prod", "v2", "2024-canary", "1.0", "b" * 63])
def test_valid_alias_names_are_returned_unchanged(alias: str) -> None:
    assert validate_alias_name(alias) == alias


@pytest.mark.parametrize("alias", ["1", "12", "0", "007"])
def test_an_alias_is_never_all_digits(alias: str) -> None:
    with pytest.raises(InvalidNameError) as caught:
        validate_alias_name(alias)
    assert str(caught.value) == (
        f"invalid alias name {alias!r}: all digits, so it would read as a version "
        "number"
    )


@pytest.mark.parametrize(
    ("alias", "reason"),
    [
        ("b" * 64, "64 characters, at most 63"),
        ("Prod", CHARSET),
        ("-prod", CHARSET),
        ("", "it is empty"),
    ],
)
def test_aliases_follow_the_model_name_rules(alias: str, reason: str) -> None:
    with pytest.raises(InvalidNameError) as caught:
        validate_alias_name(alias)
    assert str(caught.value) == f"invalid alias name {alias!r}: {reason}"


@pytest.mark.parametrize(
    ("value", "version"), [("3", 3), (3, 3), (" 7 ", 7), ("120", 120)]
)
def test_versions_are_positive_integers(value: str | int, version: int) -> None:
    assert parse_version(value) == version


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("0", "0"),
        (0, "0"),
        ("-1", "-1"),
        ("01", "01"),
        ("1.0", "1.0"),
        ("x", "x"),
        ("", ""),
        ("\u00b2", "\u00b2"),
        ("\u0661", "\u0661"),
    ],
)
def test_anything_else_is_not_a_version(value: str | int, shown: str) -> None:
    with pytest.raises(InvalidNameError) as caught:
        parse_version(value)
    assert str(caught.value) == (
        f"invalid version name {shown!r}: a version is a positive integer"
    )


def test_is_version_tells_numbers_from_aliases() -> None:
    assert is_version("12")
    assert not is_version("prod")
    assert not is_version("v2")
    assert not is_version("\u0661")


def test_a_version_too_long_for_int_is_refused_without_parsing_it() -> None:
    # Python refuses to convert more than 4,300 digits (a ValueError, not ours).
    with pytest.raises(InvalidNameError) as caught:
        parse_version("9" * 5000)
    assert str(caught.value) == (
        "invalid version name '99999999999999999999...': 5000 characters, "
        "a version has at most 18 digits"
    )
