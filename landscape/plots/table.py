"""Tables of clean and robust error per method (Liu Table 1; Kanai Tables 1, 3), in %.

Where the group holds `clean_error_std` / `robust_error_std` (rows of several seeds),
each cell reads "mean ± std".
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import plotly.graph_objects as go

from . import Figure, Group, renderer

COLUMNS = (("clean_error", "clean error (%)"), ("robust_error", "robust error (%)"))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def cell(mean: float, std: float | None) -> str:
    """A percentage, with its spread when there is one."""
    if std is None or not np.isfinite(std):
        return f"{100 * mean:.2f}"
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


@renderer("table", needs={"clean_error": 1, "robust_error": 1}, text=("row",))
def render(groups: Sequence[Group]) -> list[Figure]:
    figures = []
    for g in groups:
        rows = [_text(r) for r in g.arrays["row"]]
        columns = [
            [
                cell(float(m), None if f"{key}_std" not in g.arrays else float(s))
                for m, s in zip(g.arrays[key], g.arrays.get(f"{key}_std", g.arrays[key]))
            ]
            for key, _ in COLUMNS
        ]
        spread = any(f"{key}_std" in g.arrays for key, _ in COLUMNS)
        heads = [f"{head}{', mean ± std' if spread else ''}" for _, head in COLUMNS]
        # Sized to the text: the row labels take their share of the width, the cells the rest.
        label_width = 0.08 * max(len(r) for r in rows) + 0.2
        width = label_width + (3.0 + 1.6 * spread)
        fig = plt.figure(figsize=(width, 0.3 * (len(rows) + 1)))
        ax = fig.add_axes((0, 0, 1, 1))
        ax.axis("off")
        table = ax.table(
            cellText=[list(c) for c in zip(*columns)],
            rowLabels=rows,
            colLabels=heads,
            cellLoc="center",
            bbox=(label_width / width, 0, 1 - label_width / width, 1),
        )
        table.auto_set_font_size(False)
        table.set_fontsize(9)
        web = go.Figure(
            go.Table(
                header={"values": ["", *heads]},
                cells={"values": [rows, *columns]},
            )
        )
        web.update_layout(margin={"l": 10, "r": 10, "t": 10, "b": 10}, height=60 + 30 * len(rows))
        figures.append(Figure(f"table_{g.path.rsplit('/', 1)[-1]}", fig, web))
    return figures
