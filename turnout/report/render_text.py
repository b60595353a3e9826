"""The report for a terminal: aligned tables, then the verdicts in words."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MISSING = "-"


def render_text(report: dict[str, Any]) -> str:
    """The report as lines of text (tables aligned on their columns)."""
    lines = [
        f"{report['model']}@{report['alias']}: {report['since']} to {report['until']}"
        f" (control: version {report['control']})",
        "",
    ]
    classifier = report["kind"] == "classifier"
    quality = ["accuracy", "interval"] if classifier else ["mae", "rmse"]
    rows = []
    for entry in report["versions"]:
        latency = entry["latency_ms"]
        if classifier:
            figures = [
                _number(entry["accuracy"]["value"]),
                _interval(entry["accuracy"]),
            ]
        else:
            figures = [_number(entry["mae"]["value"]), _number(entry["rmse"]["value"])]
        rows.append(
            [
                entry["version"],
                f"{entry['weight']:g}",
                str(entry["requests"]),
                str(entry["errors"]),
                _number(latency["p50"], 1),
                _number(latency["p95"], 1),
                _number(latency["p99"], 1),
                str(entry["labelled"]),
                _percent(entry["match_rate"]),
                *figures,
            ]
        )
    header = ["version", "weight", "requests", "errors", "p50 ms", "p95 ms"]
    header += ["p99 ms", "labelled", "matched", *quality]
    lines += table(header, rows)
    labels = report["labels"]
    lines += [
        "",
        f"labels: {labels['received']} received, {labels['unmatched']} not matched "
        "to a captured request",
    ]
    srm = report["srm"]
    if srm is not None:
        lines.append(
            f"sample ratio: p = {srm['p_value']:.3g}"
            + (f": {srm['reason']}" if srm["blocked"] else " (as configured)")
        )
    lines += ["", "verdicts:"]
    lines += [f"  {c['verdict']}" for c in report["comparisons"]] or ["  (one version)"]
    drift = [row for row in report["drift"] if row["against"] == "baseline"]
    if drift:
        lines += ["", "drift against the training baseline:"]
        lines += table(
            ["version", "feature", "rows", "psi", "test", "statistic", "p", "status"],
            [
                [
                    row["version"],
                    row["feature"],
                    str(row["rows"]),
                    _number(row["psi"], 3),
                    row["method"] or MISSING,
                    _number(row["statistic"], 3),
                    _number(row["p_value"], 3),
                    row["status"],
                ]
                for row in drift
            ],
        )
    for shadow in report["shadows"]:
        agreement = shadow["agreement"]
        lines.append(
            f"shadow {shadow['shadow']} of version {shadow['primary']}: agrees on "
            f"{_number(agreement['value'])} of {shadow['count']} rows "
            f"({_interval(agreement)})"
        )
    return "\n".join(lines)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell: text left, figures right."""
    widths = [
        max(len(str(row[index])) for row in [header, *rows])
        for index in range(len(header))
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width)
            if index == 1 and not cell[:1].isdigit()
            else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), *(line(row) for row in rows)]


def _number(value: float | None, digits: int = 3) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def _percent(value: float | None) -> str:
    return MISSING if value is None else f"{value:.1%}"


def _interval(figures: dict[str, float | None]) -> str:
    low, high = figures["low"], figures["high"]
    if low is None or high is None or figures["value"] is None:
        return MISSING
    return f"{low:.3f} to {high:.3f}"
