"""The report as one self-contained HTML page (``turnout report --html FILE``).

No script, style sheet, font or image is fetched: the style is inline and every
chart is SVG written here by hand, a few hundred bytes per series. A charting
library would have to be inlined to keep the page self-contained: Plotly's
bundle is 4.8 MB, Bokeh's 1.3 MB, and Altair needs vl-convert, an 88 MB native
package, to inline Vega. Hand-written SVG keeps the page at tens of kilobytes
(30 features and 3 versions: well under 1 MB, ``tests/unit/test_report_html.py``)
and needs nothing to view it but a browser, offline.

Charts: latency per version (p50, p95, p99), accuracy (or MAE) over time with
its interval, the prediction mix, drift (PSI) per feature and version, shadow
agreement with its interval. Each is an ``<svg class="chart">`` whose
``data-chart`` names it and ``data-marks`` counts the marks drawn from data; the
page's only script records errors into the ``data-errors`` attribute of
``<html>``, which a headless browser's DOM dump reveals.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from turnout.report.render_json import render_json
from turnout.report.render_text import MISSING

WIDTH = 640
BAR = 16
GAP = 6
LEFT = 150
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
SHARE_COLOURS = (*COLOURS, "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
PSI_STABLE, PSI_SHIFTED = 0.1, 0.25

ERROR_RECORDER = (
    "(function(){var d=document.documentElement,e=[];function k(m){e.push(String(m));"
    "d.setAttribute('data-errors',JSON.stringify(e));}"
    "window.addEventListener('error',function(v){k(v.message||'resource failed "
    "to load')},true);var c=console.error;console.error=function(){k([].join."
    "call(arguments,' '));c.apply(console,arguments);};d.setAttribute("
    "'data-errors','[]');})();"
)

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:980px;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:2px 10px;text-align:right}
th{border-bottom:1px solid #999}td:first-child,th:first-child{text-align:left}
.verdict{margin:.3em 0;padding:.3em .6em;border-left:4px solid #999}
.ahead{border-color:#2ca02c}.behind{border-color:#d62728}.blocked{border-color:#ff7f0e}
svg text{font:11px system-ui,sans-serif}.axis{stroke:#999}.note{color:#666}
"""


def render_html(report: dict[str, Any]) -> str:
    """The report as one HTML page that needs nothing else to render."""
    versions = [entry["version"] for entry in report["versions"]]
    colour = {
        version: COLOURS[index % len(COLOURS)] for index, version in enumerate(versions)
    }
    title = f"{report['model']}@{report['alias']}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<script>{ERROR_RECORDER}</script>",
        f"<title>Turnout report: {_text(title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{_text(title)}</h1>",
        f'<p class="note">{_text(report["since"])} to {_text(report["until"])}; '
        f"control: version {_text(report['control'])}</p>",
        "<h2>Verdicts</h2>",
        *_verdicts(report),
        "<h2>Versions</h2>",
        _versions_table(report),
        "<h2>Latency</h2>",
        _latency_chart(report, colour),
        "<h2>Accuracy over time</h2>"
        if report["kind"] == "classifier"
        else "<h2>MAE over time</h2>",
        _over_time_chart(report, colour),
        "<h2>Prediction mix</h2>",
        _mix_chart(report),
        "<h2>Drift per feature (PSI)</h2>",
        _drift_chart(report, colour),
        "<h2>Shadow agreement</h2>",
        _shadow_chart(report),
        "<h2>The figures as JSON</h2>",
        f"<details><summary>JSON</summary><pre>{_text(render_json(report))}</pre>"
        "</details>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _text(value: object) -> str:
    return html.escape(str(value))


def _figure(value: float | None, digits: int = 3) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def _verdicts(report: dict[str, Any]) -> list[str]:
    lines = [
        f'<p class="verdict {_text(c.get("outcome", ""))}">{_text(c["verdict"])}</p>'
        for c in report["comparisons"]
    ]
    srm = report["srm"]
    if srm is not None and srm["blocked"]:
        lines.append(f'<p class="verdict blocked">{_text(srm["reason"])}</p>')
    return lines or ['<p class="note">one version: nothing to compare</p>']


def _versions_table(report: dict[str, Any]) -> str:
    classifier = report["kind"] == "classifier"
    header = ["version", "weight", "requests", "errors", "labelled", "matched"]
    header += ["accuracy", "interval"] if classifier else ["MAE", "RMSE"]
    rows = []
    for entry in report["versions"]:
        if classifier:
            accuracy = entry["accuracy"]
            quality = [
                _figure(accuracy["value"]),
                f"{_figure(accuracy['low'])} to {_figure(accuracy['high'])}",
            ]
        else:
            quality = [_figure(entry["mae"]["value"]), _figure(entry["rmse"]["value"])]
        match = entry["match_rate"]
        rows.append(
            [
                entry["version"],
                f"{entry['weight']:g}",
                str(entry["requests"]),
                str(entry["errors"]),
                str(entry["labelled"]),
                MISSING if match is None else f"{match:.1%}",
                *quality,
            ]
        )
    head = "".join(f"<th>{_text(cell)}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_text(cell)}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _svg(name: str, height: int, marks: int, body: Sequence[str]) -> str:
    return (
        f'<svg class="chart" data-chart="{name}" data-marks="{marks}" '
        f'xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img">' + "".join(body) + "</svg>"
    )


def _empty(name: str, why: str) -> str:
    return _svg(name, 30, 0, [f'<text x="0" y="20" class="note">{_text(why)}</text>'])


def _bar(x: float, y: float, width: float, colour: str, title: str) -> str:
    return (
        f'<rect class="mark" x="{x:.1f}" y="{y:.1f}" width="{max(width, 0.5):.1f}" '
        f'height="{BAR}" fill="{colour}"><title>{_text(title)}</title></rect>'
    )


def _label(x: float, y: float, text: str, anchor: str = "end") -> str:
    return (
        f'<text x="{x:.1f}" y="{y + BAR - 4:.1f}" text-anchor="{anchor}">'
        f"{_text(text)}</text>"
    )


def _latency_chart(report: dict[str, Any], colour: dict[str, str]) -> str:
    rows = [
        (entry["version"], name, entry["latency_ms"][name])
        for entry in report["versions"]
        for name in ("p50", "p95", "p99")
        if entry["latency_ms"][name] is not None
    ]
    if not rows:
        return _empty("latency", "no captured requests")
    largest = max(value for _, _, value in rows)
    scale = (WIDTH - LEFT - 80) / largest
    body = []
    for index, (version, name, value) in enumerate(rows):
        y = index * (BAR + GAP)
        body += [
            _label(LEFT - 6, y, f"version {version} {name}"),
            _bar(LEFT, y, value * scale, colour[version], f"{value:.2f} ms"),
            _label(LEFT + value * scale + 4, y, f"{value:.1f} ms", "start"),
        ]
    return _svg("latency", len(rows) * (BAR + GAP), len(rows), body)


def _over_time_chart(report: dict[str, Any], colour: dict[str, str]) -> str:
    series = {
        entry["version"]: [p for p in entry["over_time"] if p["value"] is not None]
        for entry in report["versions"]
    }
    series = {version: points for version, points in series.items() if points}
    if not series:
        return _empty("over-time", "no labelled requests")
    hours = sorted({point["hour"] for points in series.values() for point in points})
    values = [
        bound
        for points in series.values()
        for point in points
        for bound in (point["value"], point["low"], point["high"])
        if bound is not None
    ]
    top, bottom = float(max(values)), float(min(values))
    span = (top - bottom) or 1.0
    height, plot = 220, WIDTH - LEFT - 20

    def x(hour: str) -> float:
        position = hours.index(hour)
        return LEFT + (
            plot * position / (len(hours) - 1) if len(hours) > 1 else plot / 2
        )

    def y(value: float) -> float:
        return 10 + (height - 30) * (top - value) / span

    body = [
        f'<line class="axis" x1="{LEFT}" y1="{height - 20}" x2="{WIDTH - 20}" '
        f'y2="{height - 20}"/>',
        _label(LEFT - 6, y(top) - BAR / 2, f"{top:.3f}"),
        _label(LEFT - 6, y(bottom) - BAR / 2, f"{bottom:.3f}"),
        _label(LEFT, height - BAR, hours[0], "start"),
        _label(WIDTH - 20, height - BAR, hours[-1]),
    ]
    marks = 0
    for version, points in series.items():
        banded = [p for p in points if p["low"] is not None and p["high"] is not None]
        if banded:
            upper = [f"{x(p['hour']):.1f},{y(p['high']):.1f}" for p in banded]
            lower = [f"{x(p['hour']):.1f},{y(p['low']):.1f}" for p in banded[::-1]]
            if len(banded) == 1:
                upper.append(
                    f"{x(banded[0]['hour']) + 4:.1f},{y(banded[0]['high']):.1f}"
                )
                lower.insert(
                    0, f"{x(banded[0]['hour']) + 4:.1f},{y(banded[0]['low']):.1f}"
                )
            body.append(
                f'<polygon points="{" ".join(upper + lower)}" fill="{colour[version]}" '
                'fill-opacity="0.2"/>'
            )
        line = " ".join(f"{x(p['hour']):.1f},{y(p['value']):.1f}" for p in points)
        body.append(
            f'<polyline points="{line}" fill="none" stroke="{colour[version]}" '
            'stroke-width="2"/>'
        )
        for point in points:
            marks += 1
            body.append(
                f'<circle class="mark" cx="{x(point["hour"]):.1f}" '
                f'cy="{y(point["value"]):.1f}" r="3" fill="{colour[version]}">'
                f"<title>version {_text(version)} {_text(point['hour'])}: "
                f"{point['value']:.3f} ({point['labelled']} labelled)</title></circle>"
            )
    for index, version in enumerate(series):
        body.append(_label(10, 10 + index * (BAR + GAP), f"version {version}", "start"))
        body.append(
            f'<rect x="0" y="{14 + index * (BAR + GAP)}" width="8" height="8" '
            f'fill="{colour[version]}"/>'
        )
    return _svg("over-time", height, marks, body)


def _mix_chart(report: dict[str, Any]) -> str:
    mixes = [
        (entry["version"], entry["prediction_mix"])
        for entry in report["versions"]
        if entry["prediction_mix"]
    ]
    if not mixes:
        return _empty("prediction-mix", "no predictions captured")
    classes = sorted({name for _, mix in mixes for name in mix})
    shade = {
        name: SHARE_COLOURS[index % len(SHARE_COLOURS)]
        for index, name in enumerate(classes)
    }
    plot = WIDTH - LEFT - 20
    body, marks = [], 0
    for row, (version, mix) in enumerate(mixes):
        y, x, total = row * (BAR + GAP), float(LEFT), sum(mix.values())
        body.append(_label(LEFT - 6, y, f"version {version}"))
        for name in classes:
            share = mix.get(name, 0) / total
            if share:
                marks += 1
                body.append(
                    _bar(x, y, share * plot, shade[name], f"{name}: {share:.1%}")
                )
                x += share * plot
    legend_y = len(mixes) * (BAR + GAP) + 4
    for index, name in enumerate(classes[:12]):
        body.append(
            f'<rect x="{LEFT + index * 70}" y="{legend_y + 4}" width="8" height="8" '
            f'fill="{shade[name]}"/>'
        )
        body.append(_label(LEFT + index * 70 + 11, legend_y, name, "start"))
    return _svg("prediction-mix", legend_y + BAR + 4, marks, body)


def _drift_chart(report: dict[str, Any], colour: dict[str, str]) -> str:
    rows = [
        row
        for row in report["drift"]
        if row["against"] == "baseline" and row["psi"] is not None
    ]
    if not rows:
        return _empty(
            "drift", "no baseline, or fewer than 100 rows per feature: no drift figures"
        )
    largest = max(max(row["psi"] for row in rows), PSI_SHIFTED * 1.2)
    scale = (WIDTH - LEFT - 70) / largest
    height = len(rows) * (BAR + 2) + 20
    body = [
        f'<line class="axis" x1="{LEFT + limit * scale:.1f}" y1="0" '
        f'x2="{LEFT + limit * scale:.1f}" y2="{height - 18}" stroke-dasharray="4 3"/>'
        f'<text x="{LEFT + limit * scale:.1f}" y="{height - 4}" '
        f'text-anchor="middle">{limit}</text>'
        for limit in (PSI_STABLE, PSI_SHIFTED)
    ]
    for index, row in enumerate(rows):
        y = index * (BAR + 2)
        body += [
            _label(LEFT - 6, y, f"{row['feature']} v{row['version']}"),
            _bar(
                LEFT,
                y,
                row["psi"] * scale,
                colour.get(row["version"], COLOURS[0]),
                f"PSI {row['psi']:.3f}: {row['status']}",
            ),
            _label(LEFT + row["psi"] * scale + 4, y, f"{row['psi']:.3f}", "start"),
        ]
    return _svg("drift", height, len(rows), body)


def _shadow_chart(report: dict[str, Any]) -> str:
    shadows = [s for s in report["shadows"] if s["agreement"]["value"] is not None]
    if not shadows:
        return _empty("shadows", "no shadow runs captured in this window")
    plot = WIDTH - LEFT - 70
    body = []
    for index, shadow in enumerate(shadows):
        y = index * (BAR + GAP)
        agreement = shadow["agreement"]
        body += [
            _label(LEFT - 6, y, f"v{shadow['shadow']} shadowing v{shadow['primary']}"),
            _bar(
                LEFT,
                y,
                agreement["value"] * plot,
                COLOURS[2],
                f"agreement {agreement['value']:.3f} over {shadow['count']} rows",
            ),
            f'<line x1="{LEFT + agreement["low"] * plot:.1f}" y1="{y + BAR / 2:.1f}" '
            f'x2="{LEFT + agreement["high"] * plot:.1f}" y2="{y + BAR / 2:.1f}" '
            'stroke="#222" stroke-width="2"/>',
            _label(LEFT + plot + 4, y, f"{agreement['value']:.1%}", "start"),
        ]
    return _svg("shadows", len(shadows) * (BAR + GAP), len(shadows), body)
