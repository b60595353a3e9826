"""The turnout command's argument parsing and formatting helpers (pure)."""

from __future__ import annotations

import getpass

import pytest

from chalicelib.aliases.document import AliasDocument, Capture, Revision, Shadow
from turnout.cli.parsing import (
    default_actor,
    parse_capture_percent,
    parse_labels,
    parse_shadow,
    parse_tag,
    parse_tags,
    parse_version_argument,
    parse_weight,
    parse_weights,
)
from turnout.cli.render import (
    alias_lines,
    format_capture,
    format_routing,
    format_shadow,
    format_table,
    plural,
)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("1=90", (1, 90)), ("12=0", (12, 0)), ("3=2.5", (3, 2.5)), ("2=-5", (2, -5))],
)
def test_a_weight_is_version_equals_weight(
    text: str, parsed: tuple[int, float]
) -> None:
    result = parse_weight(text)
    assert result == parsed
    assert type(result[1]) is type(parsed[1])  # whole weights stay integers


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1:90", "'1:90' is not VERSION=WEIGHT (for example 1=90)"),
        ("190", "'190' is not VERSION=WEIGHT (for example 1=90)"),
        ("0=90", "version '0' is not a positive integer"),
        ("a=90", "version 'a' is not a positive integer"),
        ("=90", "version '' is not a positive integer"),
        ("1=", "weight '' is not a number"),
        ("1=ninety", "weight 'ninety' is not a number"),
    ],
)
def test_a_malformed_weight_is_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_weight(text)
    assert str(caught.value) == message


def test_weights_map_versions_once_each() -> None:
    assert parse_weights(("1=90", "2=10")) == {1: 90, 2: 10}
    assert parse_weights(()) == {}
    with pytest.raises(ValueError) as caught:
        parse_weights(("1=50", "2=25", "1=25"))
    assert str(caught.value) == "version 1 is given more than once"


@pytest.mark.parametrize(
    ("text", "shadow"),
    [("3:5", Shadow(3, 5)), ("2:0.5", Shadow(2, 0.5)), ("4:10%", Shadow(4, 10))],
)
def test_a_shadow_is_version_colon_percent(text: str, shadow: Shadow) -> None:
    assert parse_shadow(text) == shadow


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3", "'3' is not VERSION:PERCENT (for example 3:5)"),
        ("3=5", "'3=5' is not VERSION:PERCENT (for example 3:5)"),
        ("x:5", "shadow version 'x' is not a positive integer"),
        ("3:five", "shadow percentage 'five' is not a number"),
    ],
)
def test_a_malformed_shadow_is_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_shadow(text)
    assert str(caught.value) == message


def test_tags_are_key_equals_value() -> None:
    assert parse_tag("team=ml") == ("team", "ml")
    assert parse_tag("note=a=b") == ("note", "a=b")
    assert parse_tag("empty=") == ("empty", "")
    assert parse_tags(("team=ml", "stage=dev")) == {"team": "ml", "stage": "dev"}


@pytest.mark.parametrize("text", ["team", "=ml", " =ml"])
def test_a_tag_needs_a_key(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_tag(text)
    assert str(caught.value) == f"{text!r} is not KEY=VALUE (for example team=ml)"


def test_a_tag_is_given_once() -> None:
    with pytest.raises(ValueError) as caught:
        parse_tags(("team=ml", "team=ops"))
    assert str(caught.value) == "tag 'team' is given more than once"


def test_labels_are_comma_separated() -> None:
    assert parse_labels("setosa, versicolor,virginica") == [
        "setosa",
        "versicolor",
        "virginica",
    ]
    assert parse_labels("a,,b") == ["a", "", "b"]  # the registry refuses the gap


def test_a_version_argument_is_a_positive_integer() -> None:
    assert parse_version_argument("3") == 3
    with pytest.raises(ValueError) as caught:
        parse_version_argument("latest")
    assert str(caught.value) == "version 'latest' is not a positive integer"


def test_routing_prints_in_the_syntax_alias_set_takes() -> None:
    assert format_routing({2: 10, 1: 90}) == "1=90 2=10"
    assert format_routing({1: 0.5, 3: 0}) == "1=0.5 3=0"
    assert format_routing({1: 1_000_000, 2: 2.0}) == "1=1000000 2=2"
    assert format_shadow(Shadow(3, 5)) == "3:5"
    assert format_shadow(Shadow(3, 2.5)) == "3:2.5"
    assert format_shadow(Shadow(3, 5.0)) == "3:5"
    assert format_shadow(None) == ""


def test_tables_align_columns_and_show_empty_cells_as_dashes() -> None:
    assert format_table(["A", "LONGER"], [("xyz", ""), ("1", None), ("", 22)]) == [
        "A    LONGER",
        "xyz  -",
        "1    -",
        "-    22",
    ]


def test_an_alias_for_people() -> None:
    document = AliasDocument(
        "iris",
        "prod",
        Revision(2, {1: 2, 2: 1}, Shadow(3, 5), "t2", "bob", "canary"),
        revision_id="00000002-5f2a",
    )
    assert alias_lines(document) == [
        "iris@prod revision 2",
        "  updated  t2 by bob",
        "  reason   canary",
        "  routing  1=2 2=1 (66.67% to version 1, 33.33% to version 2)",
        "  shadow   3:5 (version 3 gets a copy of 5% of the requests)",
        "  capture  nothing",
    ]


def test_two_revisions_that_differ_only_in_capture_look_different() -> None:
    def shown(capture: Capture | None) -> list[str]:
        revision = Revision(2, {1: 1}, None, "t2", "bob", "", capture=capture)
        return alias_lines(AliasDocument("iris", "prod", revision, revision_id="r"))

    assert shown(None)[-2:] == ["  shadow   none", "  capture  nothing"]
    assert shown(Capture(10, ("outputs",)))[-1] == (
        "  capture  10% of the requests, keeping outputs"
    )
    assert format_capture(Capture(2.5)) == "2.5% inputs,outputs"
    assert format_capture(None) == ""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "capture percentage '0' is not in (0, 100]"),
        ("100.5", "capture percentage '100.5' is not in (0, 100]"),
        ("nan", "capture percentage 'nan' is not in (0, 100]"),
        ("lots", "capture percentage 'lots' is not a number"),
    ],
)
def test_a_capture_percentage_names_itself_when_refused(
    text: str, message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        parse_capture_percent(text)
    assert str(caught.value) == message
    assert parse_capture_percent("10%") == 10


def test_counts_are_pluralised() -> None:
    assert [plural(count, "row") for count in (0, 1, 2)] == [
        "0 rows",
        "1 row",
        "2 rows",
    ]


def test_the_actor_defaults_to_the_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(getpass, "getuser", lambda: "carol")
    assert default_actor() == "carol"


def test_the_actor_is_unknown_without_a_user(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_user() -> str:
        raise OSError("No username set in the environment")

    monkeypatch.setattr(getpass, "getuser", no_user)
    assert default_actor() == "unknown"
