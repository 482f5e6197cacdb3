"""The interactive pages load in headless Chromium with no console errors and draw their plots."""

import html
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


def load(page, tmp_path, width=None):
    """Run the page in headless Chromium (`width` px wide); returns (rendered DOM, console lines)."""
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
        *([f"--window-size={width},900"] if width else []),
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


# Measures the laid-out page and writes the numbers into the DOM that --dump-dom returns.
MEASURE = """<script>window.addEventListener('load', () => {
  const page = document.documentElement.clientWidth;
  const tables = [...document.querySelectorAll('table')].map(t => t.getBoundingClientRect().width);
  const cells = [...document.querySelectorAll('td')].map(c => c.getBoundingClientRect().width);
  const plots = [...document.querySelectorAll('.plotly-graph-div')].map(p => p.getBoundingClientRect().width);
  const main = (document.querySelector('main') || document.body).getBoundingClientRect().width;
  const out = document.createElement('pre');
  out.id = 'layout';
  out.textContent = JSON.stringify({page, main, tables, cells, plots});
  document.body.appendChild(out);
});</script>"""


def test_report_reads_well_at_laptop_width(tmp_path):
    """At 1400 px the provenance tables run the column's width below the figures: no narrow
    side column breaking words letter by letter (issue 13)."""
    import json

    from plot_data import build

    results = build(tmp_path / "r.h5", analyses=("hessian", "surface"))
    page = write_report(results, tmp_path / "report.html")
    page.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    dom, console = load(page, tmp_path, width=1400)
    assert_clean(dom, console, plots=3)
    layout = json.loads(html.unescape(re.search(r'<pre id="layout">(.*?)</pre>', dom).group(1)))
    assert 1380 <= layout["page"] <= 1400  # less a scrollbar
    assert layout["tables"] and min(layout["tables"]) >= 0.6 * layout["main"]
    assert layout["main"] >= 0.8 * min(layout["page"], 1200)
    assert min(layout["cells"]) >= 500  # values get most of the table, never a sliver
    assert min(layout["plots"]) >= 0.9 * layout["main"] - 50
