"""docs/operations.md's configuration table lists exactly what Settings reads."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from chalicelib.config import Settings

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
UNITS = {"KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def environment_variables() -> dict[str, object]:
    """Each variable ``Settings.from_env`` reads, with the default it falls back to."""
    return {
        f"TURNOUT_{field.name.upper()}": field.default for field in fields(Settings)
    }


def configuration_table(text: str) -> dict[str, str]:
    """The first table under "## Configuration": variable -> its default cell."""
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    in_table = False
    for line in section.splitlines():
        if not line.startswith("|"):
            if in_table:
                break
            continue
        in_table = True
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`(TURNOUT_[A-Z0-9_]+)`", cells[0])
        if match is None:
            continue
        assert match.group(1) not in rows, f"{match.group(1)} is listed twice"
        rows[match.group(1)] = cells[1]
    return rows


def parse_default(cell: str) -> object:
    """'(none)' -> '', '`prod`' -> 'prod', '8 MiB' -> 8388608, '0.1' -> 0.1."""
    if cell == "(none)":
        return ""
    if cell.startswith("`") and cell.endswith("`"):
        return cell[1:-1]
    size = re.fullmatch(r"(\d+) (KiB|MiB|GiB)", cell)
    if size is not None:
        return int(size.group(1)) * UNITS[size.group(2)]
    if re.fullmatch(r"\d+", cell):
        return int(cell)
    return float(cell)


def test_the_table_lists_exactly_the_variables_settings_reads() -> None:
    documented = configuration_table(OPERATIONS.read_text(encoding="utf-8"))
    assert sorted(documented) == sorted(environment_variables())


@pytest.mark.parametrize("variable", sorted(environment_variables()))
def test_the_documented_default_is_the_default_of_settings(variable: str) -> None:
    documented = configuration_table(OPERATIONS.read_text(encoding="utf-8"))
    default = environment_variables()[variable]
    value = parse_default(documented[variable])
    assert value == default and isinstance(value, str) == isinstance(default, str), (
        f"{variable}: docs say {documented[variable]!r}, Settings says {default!r}"
    )


def test_the_defaults_are_what_from_env_falls_back_to() -> None:
    # The table's defaults are only true if an empty environment yields them.
    settings = Settings.from_env({})
    for variable, default in environment_variables().items():
        name = variable.removeprefix("TURNOUT_").lower()
        assert getattr(settings, name) == default


def test_parse_default_reads_each_form_of_the_table() -> None:
    assert [
        parse_default(cell)
        for cell in ["(none)", "`prod`", "8 MiB", "1 GiB", "3", "0.1"]
    ] == ["", "prod", 8 * 1024**2, 1024**3, 3, 0.1]
