"""The interactive pages load in headless Chromium with no console errors and draw their plots."""

import re
import shutil
import subprocess

import pytest

from landscape.plots import render_file
from landscape.plots.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (Debian package `chromium`)"
)


def load(page, tmp_path):
    """Run the page in headless Chromium; returns (rendered DOM, console lines)."""
    args = [
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--log-level=0",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


def assert_clean(dom, console, plots):
    errors = [line for line in console if re.search(r"Uncaught|Error|error", line)]
    assert not errors, errors
    assert dom.count('class="main-svg"') >= plots  # plotly drew into the page


def test_renderer_html_page(digits_run, tmp_path):
    render_file(digits_run / "trace.h5", tmp_path, formats=("html",))
    dom, console = load(tmp_path / "trace.html", tmp_path)
    assert_clean(dom, console, plots=1)


def test_report_page(digits_run, tmp_path):
    page = write_report(digits_run / "trace.h5", tmp_path / "report.html")
    dom, console = load(page, tmp_path)
    assert_clean(dom, console, plots=2)
    assert "checkpoint_sha256" in dom and "/trace" in dom
