"""The report page in a real browser: headless Chromium (Debian's package,
installed by tools/install-chromium when missing) renders it without an error,
draws every chart with its data, and takes the screenshot the docs show."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.demo_support import ROOT
from tests.report_support import CHARTS, synthetic_report
from turnout.report.render_html import render_html

SCREENSHOT = ROOT / "docs" / "images" / "report.png"
HEADLESS = ["--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars"]


@pytest.fixture(scope="module")
def chromium() -> str:
    """The chromium command, installed first when missing; a skip that says why
    when it cannot be."""
    found = shutil.which("chromium")
    if found is None:
        installing = subprocess.run(
            [str(ROOT / "tools" / "install-chromium")],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        found = shutil.which("chromium")
        if found is None:
            pytest.skip(
                "Chromium is not installed and tools/install-chromium could not "
                f"install it: {installing.stderr.strip() or installing.returncode}"
            )
    return found


def browse(chromium: str, *arguments: str) -> str:
    return subprocess.run(
        [chromium, *HEADLESS, *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout


def test_the_page_renders_every_chart_without_an_error(
    chromium: str, tmp_path: Path
) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(synthetic_report(features=6, versions=3)))
    dom = browse(chromium, "--dump-dom", page.as_uri())
    errors = re.search(r'<html[^>]* data-errors="([^"]*)"', dom)
    assert errors is not None, "the page's error recorder did not run"
    assert json.loads(errors.group(1).replace("&quot;", '"')) == []
    charts = re.findall(
        r'<svg class="chart" data-chart="([^"]+)" data-marks="(\d+)"(.*?)</svg>',
        dom,
        flags=re.DOTALL,
    )
    assert [name for name, _, _ in charts] == CHARTS
    for name, said, body in charts:
        drawn = len(re.findall(r'<(rect|circle) class="mark"', body))
        assert drawn == int(said) > 0, name
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browse(
        chromium,
        "--window-size=1000,1700",
        f"--screenshot={SCREENSHOT}",
        page.as_uri(),
    )
    assert SCREENSHOT.stat().st_size > 10_000
