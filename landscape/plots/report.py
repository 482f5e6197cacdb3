"""One self-contained HTML page for a results file: every group, interactive, with provenance.

Laid out for a laptop screen: one column no wider than `MAX_WIDTH`, each analysis's
figures first at full width, then one provenance table per group, also full width;
only long tokens (hashes, paths, JSON) may break inside a word.
"""

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
MAX_WIDTH = "1200px"
# Values that are one long token: they may wrap anywhere, the rest wraps between words.
LONG = ("command", "checkpoint", "checkpoint_sha256", "config")
CSS = f"""
body {{ font-family: system-ui, sans-serif; margin: 0; color: #222; }}
main {{ max-width: {MAX_WIDTH}; margin: 0 auto; padding: 1em 1.5em; }}
h1 {{ font-size: 1.3em; overflow-wrap: anywhere; }}
section {{ margin-bottom: 2.5em; }}
.plots > div {{ width: 100%; }}
details {{ margin-top: 1em; }}
summary {{ cursor: pointer; font-weight: 600; }}
table.prov {{ width: 100%; border-collapse: collapse; margin: 0.75em 0; font-size: 13px;
  table-layout: fixed; }}
table.prov caption {{ text-align: left; font-weight: 600; padding: 0.25em 0; }}
table.prov th {{ width: 11em; text-align: left; font-weight: normal; color: #555; }}
table.prov th, table.prov td {{ border: 1px solid #ddd; padding: 3px 6px; vertical-align: top; }}
table.prov td {{ word-break: normal; overflow-wrap: break-word; }}
table.prov td.long {{ font-family: ui-monospace, monospace; word-break: break-word;
  overflow-wrap: anywhere; }}
"""


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
            f"<section><h2>{html.escape(analysis)}</h2><div class='plots'>{plots}</div>"
            f"<details open><summary>provenance ({len(groups)} run"
            f"{'s' if len(groups) > 1 else ''})</summary>{tables}</details></section>"
        )
    if not sections:
        raise BadInput(f"{path} holds no group that a renderer knows")
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>landscape report: {html.escape(Path(path).name)}</title>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script><style>{CSS}</style></head>"
        f"<body><main><h1>landscape report: {html.escape(Path(path).name)}</h1>"
        f"{''.join(sections)}</main></body></html>"
    )
    target = Path(out)
    with atomic_path(target) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return target


def _provenance_table(group: str, attrs: dict) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th>"
        f"<td{' class=long' if k in LONG else ''}>{html.escape(str(attrs.get(k, '')))}</td></tr>"
        for k in PROVENANCE
    )
    return f"<table class='prov'><caption>{html.escape(group)}</caption>{rows}</table>"
