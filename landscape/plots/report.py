"""One self-contained HTML page for a results file: every group, interactive, with provenance."""

from __future__ import annotations

import html
from pathlib import Path

from plotly.offline import get_plotlyjs

from ..util import BadInput, atomic_path
from . import draw, load_groups, renderers, style

PROVENANCE = (
    "command",
    "created",
    "checkpoint",
    "checkpoint_sha256",
    "device",
    "seed",
    "elapsed_s",
    "landscape_version",
    "config",
)


def write_report(path: str | Path, out: str | Path) -> Path:
    """Render every complete group of `path` into `out` (plotly.js embedded: works offline)."""
    style()
    sections = []
    for analysis, groups in load_groups(path).items():
        if analysis not in renderers():
            continue
        figures = draw(analysis, groups, path)
        plots = "".join(
            f.plotly.to_html(full_html=False, include_plotlyjs=False, default_width="100%")
            for f in figures
            if f.plotly
        )
        tables = "".join(_provenance_table(g.path, g.attrs) for g in groups)
        sections.append(
            f"<section><h2>{html.escape(analysis)}</h2><div class='row'><div class='plots'>{plots}</div>"
            f"<div class='prov'>{tables}</div></div></section>"
        )
    if not sections:
        raise BadInput(f"{path} holds no group that a renderer knows")
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>landscape report: "
        f"{html.escape(Path(path).name)}</title><script type='text/javascript'>{get_plotlyjs()}</script>"
        "<style>body{font-family:sans-serif;margin:1.5em}.row{display:flex;gap:1em}.plots{flex:3;min-width:0}"
        ".prov{flex:1;font-size:12px}table{border-collapse:collapse;margin-bottom:1em}"
        "td{border:1px solid #ccc;padding:2px 4px;vertical-align:top;word-break:break-all}</style></head><body>"
        f"<h1>{html.escape(str(path))}</h1>{''.join(sections)}</body></html>"
    )
    target = Path(out)
    with atomic_path(target) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return target


def _provenance_table(group: str, attrs: dict) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(attrs.get(k, '')))}</td></tr>"
        for k in PROVENANCE
    )
    return f"<table><caption>{html.escape(group)}</caption>{rows}</table>"
