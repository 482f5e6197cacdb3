import json
import re
from pathlib import Path

from landscape.plots import render_file


def plotly_figures(page: str) -> list[dict]:
    """The data and layout of every `Plotly.newPlot(id, data, layout, config)` call in a page.

    Read as JSON rather than searched as text: plotly escapes non-ASCII (ε becomes \\u03b5).
    """
    decoder = json.JSONDecoder()
    figures = []
    for match in re.finditer(r"Plotly\.newPlot\(\s*\"[^\"]*\",\s*", page):
        data, end = decoder.raw_decode(page, match.end())
        layout, _ = decoder.raw_decode(page, page.index("{", end))
        figures.append({"data": data, "layout": layout})
    return figures


def test_trace_renderer_writes_static_and_interactive(digits_run, tmp_path):
    written = render_file(digits_run / "trace.h5", tmp_path, formats=("png", "svg", "html"))
    names = sorted(Path(p).name for p in written)
    assert names == [
        "trace.html",
        "trace.png",
        "trace.svg",
        "trace_loss.html",
        "trace_loss.png",
        "trace_loss.svg",
    ]
    assert (tmp_path / "trace.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "trace.html").read_text()
    figures = plotly_figures(page)
    assert len(figures) == 1
    assert any("ε = 0.1" in (trace.get("name") or "") for trace in figures[0]["data"])
