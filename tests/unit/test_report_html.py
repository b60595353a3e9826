"""The report page: self-contained, small, every chart drawn from its data."""

from __future__ import annotations

import re

from tests.report_support import CHARTS, synthetic_report
from turnout.report.render_html import render_html


def chart_marks(page: str) -> dict[str, tuple[int, int]]:
    """Per chart: the marks it says it drew, and the marks found in it."""
    found = {}
    for name, said, body in re.findall(
        r'<svg class="chart" data-chart="([^"]+)" data-marks="(\d+)"(.*?)</svg>',
        page,
        flags=re.DOTALL,
    ):
        found[name] = (int(said), body.count('class="mark"'))
    return found


def test_the_page_for_30_features_and_3_versions_is_under_1_mb() -> None:
    page = render_html(synthetic_report(features=30, versions=3))
    assert len(page.encode()) < 1_000_000
    assert len(page.encode()) < 200_000  # hand-written SVG: kilobytes


def test_the_page_fetches_nothing() -> None:
    page = render_html(synthetic_report(features=3, versions=2))
    assert not re.search(r"\b(src|href)\s*=", page)
    assert "@import" not in page and "url(" not in page


def test_every_chart_is_drawn_with_its_data() -> None:
    report = synthetic_report(features=30, versions=3)
    marks = chart_marks(render_html(report))
    assert list(marks) == CHARTS
    assert marks["latency"] == (9, 9)  # p50, p95, p99 of 3 versions
    assert marks["over-time"] == (18, 18)  # 6 hours of 3 versions
    assert marks["drift"] == (93, 93)  # 30 features and the prediction, 3 versions
    assert marks["shadows"] == (1, 1)
    said, drawn = marks["prediction-mix"]
    assert said == drawn >= 3
