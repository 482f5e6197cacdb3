from pathlib import Path

from landscape.plots import render_file


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
    assert "plotly" in page and "ε = 0.1" in page
